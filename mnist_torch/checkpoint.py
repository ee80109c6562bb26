"""Save the training state after every epoch and resume from it: PyTorch's ``state_dict`` in one checked file.

Read it side by side with `mnist_jax/checkpoint.py`: the same functions, with flax's msgpack
serialization in place of ``torch.save``. The framework-neutral parts (what a checkpoint must
agree on to be resumed, the epoch records, the error messages) are `mnist_common.checkpoint`.

Both frameworks write their checkpoint as one file, atomically (`write_atomically`), behind a
header with a SHA-256 of every byte (`mnist_common.files.checked_bytes`): a run killed mid-write
leaves the previous checkpoint whole, and a truncated, damaged, hand-edited or other framework's
file is refused with one line, before anything in it is deserialized.

A checkpoint holds the model and optimizer state (SGD's momentum buffers), the epoch
records so far and the run's config. Resuming is exact, not approximate: the batch order
is a function of (seed, epoch) alone and nothing else in training is random, so the
epochs after a resume see the same batches, from the same state, as an uninterrupted run.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mnist_common.checkpoint import (
    DISCARD_FIX,
    RESUME_FIX,
    CheckpointError,
    check_contents,
    check_dtypes,
    check_finite,
    check_not_foreign,
    check_resumable,
    read_payload,
    records_from_json,
    records_to_json,
    train_fix,
    unreadable,
)
from mnist_common.config import TrainConfig
from mnist_common.errors import shown_path
from mnist_common.files import checked_bytes, write_atomically
from mnist_common.outdir import CHECKPOINT_FILES
from mnist_common.report import EpochRecord
from mnist_torch.model import CNN

if TYPE_CHECKING:  # annotations only
    from mnist_torch.steps import TrainState

#: The file inside a run's out-dir.
CHECKPOINT_FILE = CHECKPOINT_FILES["torch"]


def checkpoint_path(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINT_FILE


def save_checkpoint(out_dir: Path, state: TrainState, records: list[EpochRecord], config: TrainConfig) -> Path:
    """Write the state's model and optimizer after ``records[-1].epoch`` atomically: a crash mid-write leaves the
    previous checkpoint whole."""
    payload = {
        "epoch": records[-1].epoch,
        "records": records_to_json(records),
        "config": config.to_json(),
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = checked_bytes("torch", buffer.getvalue())
    return write_atomically(checkpoint_path(out_dir), lambda partial: partial.write_bytes(data))


def _read(out_dir: Path, fix: str) -> dict[str, Any]:
    path = checkpoint_path(out_dir)
    payload = read_payload(out_dir, path, "torch", fix)
    try:
        saved = torch.load(
            io.BytesIO(payload), map_location="cpu", weights_only=True
        )  # weights_only: runs no pickled code
    except pickle.UnpicklingError:  # PyTorch's own message advises weights_only=False: the opposite of safe
        raise CheckpointError(
            f"{shown_path(path)} holds Python objects besides tensors, which could run code when loaded, so it is "
            f"refused; use a checkpoint written by this project's trainer, or {DISCARD_FIX}"
        ) from None
    except Exception as err:  # whole and ours, but not what this version writes: say which, never a traceback
        raise unreadable(path, err) from None
    check_contents(path, saved)
    model = saved["model"] if isinstance(saved["model"], dict) else {}
    found = {name: str(t.dtype).removeprefix("torch.") for name, t in model.items() if isinstance(t, torch.Tensor)}
    check_dtypes(path, found, dict.fromkeys(found, "float32"), "written by a model in another precision (.double()?)")
    return saved


def load_checkpoint(out_dir: Path, state: TrainState, config: TrainConfig) -> tuple[TrainState, list[EpochRecord]]:
    """Restore a freshly created state in place from the checkpoint; returns it and the epoch records so far."""
    saved = _read(out_dir, RESUME_FIX)
    check_resumable(saved["config"], saved["epoch"], config, Path(out_dir))
    momentum = {
        f"momentum of parameter {i}": s["momentum_buffer"]
        for i, s in saved["optimizer"]["state"].items()
        if s.get("momentum_buffer") is not None
    }
    check_finite(checkpoint_path(out_dir), {**saved["model"], **momentum})
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])  # moves the momentum buffers to the parameters' device
    except (RuntimeError, ValueError, KeyError) as err:  # another model's tensors: name the file, not a traceback
        raise unreadable(checkpoint_path(out_dir), err) from None
    return state, records_from_json(saved["records"])


def load_model(out_dir: Path, device: torch.device, command: str = "evaluate") -> CNN:
    """The trained model of a run's checkpoint, for prediction and evaluation."""
    model = CNN()
    check_not_foreign(out_dir, "torch", command)  # `command` (evaluate, predict) names the other's that reads it
    weights = _read(out_dir, train_fix("torch"))["model"]
    check_finite(checkpoint_path(out_dir), weights)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise unreadable(checkpoint_path(out_dir), err) from None
    return model.to(device).eval()

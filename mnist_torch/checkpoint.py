"""Save the training state after every epoch and resume from it: PyTorch's ``state_dict`` in one checked file.

Read it side by side with `mnist_jax/checkpoint.py`: the same functions, with flax's msgpack
serialization in place of ``torch.save``. The framework-neutral parts (what a checkpoint must
agree on to be resumed, the epoch records, the error messages) are defined once here and
imported by the JAX side.

Both frameworks write their checkpoint as one file, atomically (`write_atomically`), behind a
header with a SHA-256 of every byte (`mnist_torch.files.checked_bytes`): a run killed mid-write
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
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mnist_torch.config import TrainConfig
from mnist_torch.divergence import non_finite
from mnist_torch.files import CheckedFileError, checked_bytes, first_line, read_checked, write_atomically
from mnist_torch.model import CNN
from mnist_torch.report import EpochRecord

if TYPE_CHECKING:  # the trainer imports this module
    from mnist_torch.train import TrainState

#: The file inside a run's out-dir.
CHECKPOINT_FILE = "checkpoint.pt"

#: What must be equal for the saved epochs and the resumed ones to be one run (--epochs may grow).
RESUME_KEYS = ("batch_size", "lr", "momentum", "seed", "train_size", "precision")

#: The frameworks' names in a checkpoint's header, for messages.
FRAMEWORKS = {"torch": "PyTorch", "jax": "JAX"}

#: How to recover when --resume finds no checkpoint.
RESUME_FIX = "drop --resume to start afresh, or pass the --out-dir of the run to continue"

#: How to recover from a checkpoint that is refused (damaged, foreign, holding NaN).
DISCARD_FIX = "delete it, or train again into that --out-dir without --resume"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was asked for; the message says what to do."""


def train_fix(framework: str) -> str:
    """How to get a checkpoint, for predict and evaluate."""
    return f"train one with `python -m mnist_{framework}.train`, or pass --checkpoint DIR (a training run's --out-dir)"


def missing(out_dir: Path, expected: Path, fix: str) -> CheckpointError:
    return CheckpointError(f"no checkpoint in {out_dir} (looked for {expected}); {fix}")


def refused(err: CheckedFileError) -> CheckpointError:
    """A checkpoint file that is not whole or not ours: what the file is, and the way out."""
    return CheckpointError(f"{err}; {DISCARD_FIX}")


def unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {first_line(err)}); {DISCARD_FIX}")


def check_finite(path: Path, arrays: dict[str, Any]) -> None:
    """Refuse a checkpoint holding NaN or infinite values: a trainer never saves one (mnist_torch.divergence),
    so it was damaged or written elsewhere, and would resume, predict or evaluate nonsense."""
    if bad := non_finite(arrays):
        raise CheckpointError(
            f"{path} holds NaN or infinite values in {', '.join(bad)}; it was not written by a healthy run of this "
            f"project: {DISCARD_FIX}"
        )


def records_to_json(records: list[EpochRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]


def records_from_json(records: list[dict[str, Any]]) -> list[EpochRecord]:
    return [EpochRecord(**r) for r in records]


def check_resumable(saved_config: dict[str, Any], epoch: int, config: TrainConfig, where: Path) -> None:
    """Refuse to continue a run under other hyperparameters: the result would match neither run."""
    current = config.to_json()
    for key in RESUME_KEYS:
        if saved_config[key] != current[key]:
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(
                f"the checkpoint in {where} was trained with {flag} {saved_config[key]}, this run asks for {flag} {current[key]}; "
                f"pass {flag} {saved_config[key]} to resume it, or drop --resume (or use another --out-dir) to start afresh"
            )
    if epoch > config.epochs:
        raise CheckpointError(
            f"the checkpoint in {where} has already trained {epoch} epochs, more than --epochs {config.epochs}; "
            f"pass --epochs {epoch} or more to resume it"
        )


def checkpoint_path(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINT_FILE


def save_checkpoint(out_dir: Path, state: TrainState, records: list[EpochRecord], config: TrainConfig) -> Path:
    """Write the state's model and optimizer after ``records[-1].epoch`` atomically: a crash mid-write leaves the previous checkpoint whole."""
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
    if not path.is_file():
        raise missing(Path(out_dir), path, fix)
    try:
        payload = read_checked(path, "torch", FRAMEWORKS)
    except CheckedFileError as err:
        raise refused(err) from None
    try:
        saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)  # weights_only: runs no pickled code
    except pickle.UnpicklingError:  # PyTorch's own message advises weights_only=False: the opposite of safe
        raise CheckpointError(
            f"{path} holds Python objects besides tensors, which could run code when loaded, so it is refused; "
            f"use a checkpoint written by this project's trainer, or train again into that --out-dir without --resume"
        ) from None
    except Exception as err:  # whole and ours, but not what this version writes: say which, never a traceback
        raise unreadable(path, err) from None
    check_contents(path, saved)
    return saved


#: What every checkpoint holds, in both frameworks.
CHECKPOINT_KEYS = {"epoch", "records", "config"}


def check_contents(path: Path, saved: Any, state_keys: set[str] = frozenset({"model", "optimizer"})) -> None:
    """Refuse a whole, checksummed file that still lacks what a checkpoint holds (another version's, or hand-made)."""
    lacking = sorted((CHECKPOINT_KEYS | state_keys) - set(saved)) if isinstance(saved, dict) else ["everything"]
    if lacking:
        raise CheckpointError(f"{path} is not a training checkpoint of this version (it lacks {', '.join(lacking)}); "
                              f"{DISCARD_FIX}")


def load_checkpoint(out_dir: Path, state: TrainState, config: TrainConfig) -> tuple[TrainState, list[EpochRecord]]:
    """Restore a freshly created state in place from the checkpoint; returns it and the epoch records so far."""
    saved = _read(out_dir, RESUME_FIX)
    check_resumable(saved["config"], saved["epoch"], config, Path(out_dir))
    momentum = {f"momentum of parameter {i}": s["momentum_buffer"] for i, s in saved["optimizer"]["state"].items()
                if s.get("momentum_buffer") is not None}
    check_finite(checkpoint_path(out_dir), {**saved["model"], **momentum})
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])  # moves the momentum buffers to the parameters' device
    except (RuntimeError, ValueError, KeyError) as err:  # another model's tensors: name the file, not a traceback
        raise unreadable(checkpoint_path(out_dir), err) from None
    return state, records_from_json(saved["records"])


def load_model(out_dir: Path, device: torch.device) -> CNN:
    """The trained model of a run's checkpoint, for prediction and evaluation."""
    model = CNN()
    weights = _read(out_dir, train_fix("torch"))["model"]
    check_finite(checkpoint_path(out_dir), weights)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise unreadable(checkpoint_path(out_dir), err) from None
    return model.to(device).eval()

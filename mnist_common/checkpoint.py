"""The checkpoint rules both frameworks share: what must agree to resume, the epoch records, the messages.

Each framework writes its own state in its own format (`mnist_torch/checkpoint.py`: ``torch.save``;
`mnist_jax/checkpoint.py`: flax's msgpack), behind the same SHA-256 header (`mnist_common.files.checked_bytes`):
a run killed mid-write leaves the previous checkpoint whole, and a truncated, damaged, hand-edited or other
framework's file is refused with one line, before anything in it is deserialized. What is checked after
that, and how each refusal reads, is defined once, here.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from mnist_common.config import IMPLICIT_SETTINGS, TrainConfig
from mnist_common.divergence import non_finite
from mnist_common.errors import ProjectError, shown_path
from mnist_common.files import CheckedFileError, first_line, read_checked
from mnist_common.outdir import CHECKPOINT_FILES, FRAMEWORKS
from mnist_common.report import EpochRecord
from mnist_common.weights import MAX_TENSOR_BYTES, WEIGHTS_FILE

#: What must be equal for the saved epochs and the resumed ones to be one run (--epochs may grow).
RESUME_KEYS = ("batch_size", "lr", "momentum", "seed", "train_size", "test_size", "precision")


#: How to recover when --resume finds no checkpoint.
RESUME_FIX = "drop --resume to start afresh, or pass the --out-dir of the run to continue"

#: How to recover from a checkpoint that is refused (damaged, foreign, holding NaN): a run into that folder without a
#: flag is refused (it holds a run), so the way out is the flag that replaces it, or another folder.
DISCARD_FIX = "train afresh with --overwrite, which replaces it, or into another --out-dir"


class CheckpointError(ProjectError):
    """No usable checkpoint where one was asked for; the message says what to do."""


def train_fix(framework: str) -> str:
    """How to get a checkpoint, for predict and evaluate."""
    return f"train one with `python -m mnist_{framework}.train`, or pass --checkpoint DIR (a training run's --out-dir)"


def missing(out_dir: Path, expected: Path, fix: str) -> CheckpointError:
    return CheckpointError(f"no checkpoint in {shown_path(out_dir)} (looked for {shown_path(expected)}); {fix}")


def check_not_foreign(out_dir: Path, framework: str, command: str) -> None:
    """Refuse a folder holding the other framework's checkpoint and not this one's, naming it with the command that
    reads it (and --weights, which reads its exported weights here): it is no missing checkpoint to train."""
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir / CHECKPOINT_FILES[framework]):
        return
    for other, name in CHECKPOINT_FILES.items():
        if other != framework and (out_dir / name).is_file():
            weights = out_dir / WEIGHTS_FILE
            here = f", or here --weights {shown_path(weights)}" if weights.is_file() else ""
            this = f"{FRAMEWORKS[framework]} {CHECKPOINT_FILES[framework]}"
            raise CheckpointError(
                f"{shown_path(out_dir)} holds a {FRAMEWORKS[other]} checkpoint ({name}), not the {this} that "
                f"mnist_{framework}.{command} reads; use `python -m mnist_{other}.{command} --checkpoint "
                f"{shlex.quote(str(out_dir))}`{here}"
            )


def refused(err: CheckedFileError) -> CheckpointError:
    """A checkpoint file that is not whole or not ours: what the file is, and the way out."""
    return CheckpointError(f"{err}; {DISCARD_FIX}")


def unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{shown_path(path)} is not a readable checkpoint ({type(err).__name__}: {first_line(err)}); {DISCARD_FIX}"
    )


def check_finite(path: Path, arrays: dict[str, Any]) -> None:
    """Refuse a checkpoint holding NaN or infinite values: a trainer never saves one (mnist_common.divergence),
    so it was damaged or written elsewhere, and would resume, predict or evaluate nonsense."""
    if bad := non_finite(arrays):
        raise CheckpointError(
            f"{shown_path(path)} holds NaN or infinite values in {', '.join(bad)}; it was not written by a healthy run "
            f"of this project: {DISCARD_FIX}"
        )


def records_to_json(records: list[EpochRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]


def records_from_json(records: list[dict[str, Any]]) -> list[EpochRecord]:
    return [EpochRecord(**r) for r in records]


def check_resumable(saved_config: dict[str, Any], epoch: int, config: TrainConfig, where: Path) -> None:
    """Refuse to continue a run under other hyperparameters: the result would match neither run."""
    current = config.to_json()
    saved_config = {**IMPLICIT_SETTINGS, **saved_config}  # a checkpoint from before a setting existed
    for key in RESUME_KEYS:
        if saved_config[key] != current[key]:
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(
                f"the checkpoint in {shown_path(where)} was trained with {flag} {saved_config[key]}, "
                f"this run asks for {flag} {current[key]}; "
                f"pass {flag} {saved_config[key]} to resume it, "
                "or drop --resume (or use another --out-dir) to start afresh"
            )
    if epoch > config.epochs:
        raise CheckpointError(
            f"the checkpoint in {shown_path(where)} has already trained {epoch} epochs, more than "
            f"--epochs {config.epochs}; pass --epochs {epoch} or more to resume it"
        )


#: The most bytes a checkpoint of this CNN can hold: its weights and SGD's momentum, both in float64 (the widest
#: dtype any JAX or PyTorch run writes), and room for the records of `MAX_EPOCHS` epochs and the configuration.
MAX_CHECKPOINT_BYTES = 2 * MAX_TENSOR_BYTES + (16 << 20)


def read_payload(out_dir: Path, path: Path, framework: str, fix: str) -> bytes:
    """The bytes behind the checked header of ``path``, the checkpoint a command asked ``out_dir`` for; a file
    larger than `MAX_CHECKPOINT_BYTES` is refused by its length before a byte of it is read."""
    if not path.is_file():
        raise missing(Path(out_dir), path, fix)
    try:
        return read_checked(path, framework, FRAMEWORKS, MAX_CHECKPOINT_BYTES)
    except CheckedFileError as err:
        raise refused(err) from None


#: What every checkpoint holds, in both frameworks.
CHECKPOINT_KEYS = {"epoch", "records", "config"}


def check_contents(path: Path, saved: Any, state_keys: set[str] = frozenset({"model", "optimizer"})) -> None:
    """Refuse a whole, checksummed file that still lacks what a checkpoint holds (another version's, or hand-made)."""
    lacking = sorted((CHECKPOINT_KEYS | state_keys) - set(saved)) if isinstance(saved, dict) else ["everything"]
    if lacking:
        raise CheckpointError(
            f"{shown_path(path)} is not a training checkpoint of this version (it lacks {', '.join(lacking)}); "
            f"{DISCARD_FIX}"
        )
    check_fields(path, "stored configuration", saved["config"], TrainConfig)
    if not isinstance(saved["records"], list):
        raise CheckpointError(f"{shown_path(path)} holds no list of epoch records; {DISCARD_FIX}")
    for record in saved["records"]:
        check_fields(path, "epoch record", record, EpochRecord)


def check_fields(path: Path, what: str, stored: Any, kind: type) -> None:
    """Refuse a stored dataclass (the configuration, an epoch record) of another version, naming the field it
    lacks or adds, instead of the KeyError or TypeError its use would end in."""
    expected = [field.name for field in fields(kind)]
    if not isinstance(stored, dict):
        raise CheckpointError(
            f"{shown_path(path)} holds a {what} that is a {type(stored).__name__}, expected the fields of "
            f"this version's {kind.__name__}; {DISCARD_FIX}"
        )
    lacking, extra = [f for f in expected if f not in stored], sorted(str(f) for f in stored if f not in expected)
    if lacking or extra:
        differs = "; ".join(
            part
            for part in (
                f"it lacks the field {', '.join(map(repr, lacking))}" if lacking else "",
                f"it has the field {', '.join(map(repr, extra))}, which this version does not know" if extra else "",
            )
            if part
        )
        raise CheckpointError(
            f"{shown_path(path)} was written by another version of this project: its {what} differs ({differs}); "
            f"expected the fields of this version's {kind.__name__}; {DISCARD_FIX}"
        )


def check_dtypes(path: Path, found: dict[str, str], expected: dict[str, str], hint: str) -> None:
    """Refuse arrays of another dtype than this project writes (`found` and `expected` by name), naming it: a
    float64 checkpoint (64-bit JAX) is whole and ours, just not what a float32 model runs."""
    wrong = sorted(name for name, dtype in found.items() if dtype != expected.get(name, dtype))
    if wrong:
        dtypes = " and ".join(sorted({found[name] for name in wrong}))
        names = ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        wanted = " and ".join(sorted({expected[name] for name in wrong}))
        why = hint if "64" in dtypes else "not what this project's trainers write"
        raise CheckpointError(
            f"{shown_path(path)} holds {dtypes} arrays ({names}), {why}; expected {wanted}; {DISCARD_FIX}"
        )

"""The checkpoint rules both frameworks share: what must agree to resume, the epoch records, the messages.

Each framework writes its own state in its own format (`mnist_torch/checkpoint.py`: ``torch.save``;
`mnist_jax/checkpoint.py`: flax's msgpack), behind the same SHA-256 header (`mnist_common.files.checked_bytes`):
a run killed mid-write leaves the previous checkpoint whole, and a truncated, damaged, hand-edited or other
framework's file is refused with one line, before anything in it is deserialized. What is checked after
that, and how each refusal reads, is defined once, here.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mnist_common.config import TrainConfig
from mnist_common.divergence import non_finite
from mnist_common.errors import ProjectError
from mnist_common.files import CheckedFileError, first_line, read_checked
from mnist_common.outdir import FRAMEWORKS
from mnist_common.report import EpochRecord

#: What must be equal for the saved epochs and the resumed ones to be one run (--epochs may grow).
RESUME_KEYS = ("batch_size", "lr", "momentum", "seed", "train_size", "precision")


#: How to recover when --resume finds no checkpoint.
RESUME_FIX = "drop --resume to start afresh, or pass the --out-dir of the run to continue"

#: How to recover from a checkpoint that is refused (damaged, foreign, holding NaN).
DISCARD_FIX = "delete it, or train again into that --out-dir without --resume"


class CheckpointError(ProjectError):
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
    return CheckpointError(
        f"{path} is not a readable checkpoint ({type(err).__name__}: {first_line(err)}); {DISCARD_FIX}"
    )


def check_finite(path: Path, arrays: dict[str, Any]) -> None:
    """Refuse a checkpoint holding NaN or infinite values: a trainer never saves one (mnist_common.divergence),
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
                f"the checkpoint in {where} was trained with {flag} {saved_config[key]}, "
                f"this run asks for {flag} {current[key]}; "
                f"pass {flag} {saved_config[key]} to resume it, "
                "or drop --resume (or use another --out-dir) to start afresh"
            )
    if epoch > config.epochs:
        raise CheckpointError(
            f"the checkpoint in {where} has already trained {epoch} epochs, more than --epochs {config.epochs}; "
            f"pass --epochs {epoch} or more to resume it"
        )


def read_payload(out_dir: Path, path: Path, framework: str, fix: str) -> bytes:
    """The bytes behind the checked header of ``path``, the checkpoint a command asked ``out_dir`` for."""
    if not path.is_file():
        raise missing(Path(out_dir), path, fix)
    try:
        return read_checked(path, framework, FRAMEWORKS)
    except CheckedFileError as err:
        raise refused(err) from None


#: What every checkpoint holds, in both frameworks.
CHECKPOINT_KEYS = {"epoch", "records", "config"}


def check_contents(path: Path, saved: Any, state_keys: set[str] = frozenset({"model", "optimizer"})) -> None:
    """Refuse a whole, checksummed file that still lacks what a checkpoint holds (another version's, or hand-made)."""
    lacking = sorted((CHECKPOINT_KEYS | state_keys) - set(saved)) if isinstance(saved, dict) else ["everything"]
    if lacking:
        raise CheckpointError(
            f"{path} is not a training checkpoint of this version (it lacks {', '.join(lacking)}); {DISCARD_FIX}"
        )

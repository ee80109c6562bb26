"""What both frameworks print and write: one line per epoch, ``metrics.json``, predictions and evaluations.

Shared so that the two frameworks' outputs have one schema and can be compared
field by field (and by the benchmark report) without translation.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_common.config import NUM_TEST, TrainConfig
from mnist_common.divergence import finite_or_none
from mnist_common.errors import shown_path
from mnist_common.files import write_atomically

#: The original notebook's accuracy on the 10 000 test images, the bar to clear.
ORIGINAL_ACCURACY = 0.9876


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    seconds: float  # training time of the epoch alone: evaluation and compilation excluded
    images_per_s: float


def of_test_set(config: TrainConfig) -> str:
    """What the final line's accuracy was measured on, when --test-size left part of the test set out: a
    figure on part of the test set is not one on all of it, and the line says so."""
    return "" if config.test_size == NUM_TEST else f" (on the first {config.test_size} of {NUM_TEST} test images)"


def format_epoch(record: EpochRecord, epochs: int) -> str:
    return (
        f"epoch {record.epoch:>{len(str(epochs))}}/{epochs}  train loss {record.train_loss:.4f}  "
        f"test loss {record.test_loss:.4f}  test acc {100 * record.test_accuracy:.2f}%  "
        f"{record.seconds:.2f}s  {record.images_per_s:,.0f} img/s"
    )


def write_metrics(
    framework: str,
    config: TrainConfig,
    records: list[EpochRecord],
    device: str,
    versions: dict[str, str],
    compile_seconds: float | None,
    compilation_cache: dict[str, Any] | None = None,
    diverged: dict[str, Any] | None = None,
    parallel: dict[str, int] | None = None,
    stopped_at_accuracy: int | None = None,
) -> Path:
    """Write ``<out_dir>/metrics.json`` atomically: a crash never leaves a half-written file.

    ``compile_seconds`` is the one-off cost kept out of the epoch times (XLA compilation
    for JAX; None for eager PyTorch, which compiles nothing). ``compilation_cache`` says where
    JAX's persistent cache is and how many of the compilations it served (None for PyTorch).
    ``diverged`` is where a run stopped on a non-finite loss or parameter (`mnist_common.divergence`);
    its epochs hold only the good ones, and test_accuracy is the last good one's (None if none).
    ``parallel`` says how many processes and devices trained (`describe` in each framework's `parallel`
    module); the images/s of every epoch are those of the whole run, all devices together.
    ``stopped_at_accuracy`` is the epoch after which --stop-at-accuracy ended the run before --epochs
    (`mnist_common.config.stopped_at`); None when it trained every epoch (or diverged).
    The file is strict JSON: a NaN or infinity anywhere is an error, never a bare ``NaN``.
    """
    assert config.out_dir is not None
    metrics: dict[str, Any] = {
        "framework": framework,
        "config": config.to_json(),
        "epochs": [asdict(r) for r in records],
        "test_accuracy": records[-1].test_accuracy if records else None,
        "diverged": diverged,
        "stopped_at_accuracy": stopped_at_accuracy,
        "compile_seconds": compile_seconds,
        "compilation_cache": compilation_cache,
        "device": device,
        "parallel": parallel or {"processes": 1, "devices": 1},
        "versions": {"python": platform.python_version(), **versions},
    }
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    return write_atomically(config.out_dir / "metrics.json", lambda partial: partial.write_text(text))


def top_k(probabilities: np.ndarray, k: int = 3) -> list[tuple[int, float]]:
    """The k most likely digits of one image, most likely first."""
    order = np.argsort(probabilities)[::-1][:k]
    return [(int(d), float(probabilities[d])) for d in order]


def format_predictions(
    names: Sequence[str], probabilities: np.ndarray, as_json: bool, errors: Mapping[int, str] | None = None
) -> str:
    """``digit.png: 7  (7 99.1%, 1 0.5%, 2 0.2%)`` per image, or a JSON list for machines. ``errors`` holds the
    pictures that could not be read, by position in ``names`` (``probabilities`` has a row for each of the others,
    in order): text leaves them out (the command reports them on stderr), JSON gives each ``{"image", "error"}``."""
    errors = errors or {}
    answered = [i for i in range(len(names)) if i not in errors]
    ranked = dict(zip(answered, (top_k(p) for p in probabilities)))
    if as_json:
        return json.dumps(
            [
                {"image": str(name), "error": errors[i]}
                if i in errors
                else {
                    "image": str(name),
                    "digit": ranked[i][0][0],
                    "top3": [{"digit": d, "probability": finite_or_none(round(q, 6))} for d, q in ranked[i]],
                }
                for i, name in enumerate(names)
            ],
            allow_nan=False,
        )
    return "\n".join(
        f"{shown_path(names[i])}: {top[0][0]}  ({', '.join(f'{d} {100 * q:.1f}%' for d, q in top)})"
        for i, top in ranked.items()
    )


def say_predictions(
    paths: Sequence[object], probabilities: np.ndarray, as_json: bool, errors: Mapping[int, str]
) -> None:
    """What ``python -m mnist_<framework>.predict`` ends with: the answers (`format_predictions`) on stdout,
    then, once every picture is answered, one error line each on stderr for the others, exit status 1."""
    output = format_predictions([str(p) for p in paths], probabilities, as_json, errors)
    if output:
        print(output, flush=True)
    if errors:
        sys.exit("\n".join(f"error: {message}" for message in errors.values()))


def format_evaluation(
    framework: str, source: str, device: str, loss: float, correct: int, total: int, as_json: bool
) -> str:
    """What ``python -m mnist_<framework>.evaluate`` prints: one line, or one JSON object."""
    if as_json:
        return json.dumps(
            {
                "framework": framework,
                "weights": source,
                "device": device,
                "test_loss": finite_or_none(loss),
                "test_accuracy": correct / total,
                "correct": correct,
                "total": total,
            },
            allow_nan=False,
        )
    return (
        f"test loss {loss:.4f}  test acc {100 * correct / total:.2f}% ({correct}/{total})  "
        f"{framework} on {device}, weights {shown_path(source)}"
    )

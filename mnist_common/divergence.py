"""Stopping a run whose loss or parameters stop being finite numbers, shared by both trainers.

A learning rate far too high (`--lr 1e4`) sends SGD to infinity within a few steps; from there every
loss is NaN and every later checkpoint would hold NaN weights that still "predict" a digit. So each
trainer checks, once per epoch, the losses it already reads at the epoch's end and whether its
parameters are all finite: a non-finite epoch is never saved, and the run stops with one line
naming the epoch, the step and the flag to change. Checking once per epoch costs one small read
per epoch instead of making the device wait for the host at every step; the epoch's work is the
price of a divergence, and the last good checkpoint stays as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_common.errors import ProjectError


class Diverged(ProjectError, RuntimeError):
    """The loss or a parameter became NaN or infinite; the message says where and what to change."""

    def __init__(self, epoch: int, step: int, steps: int, what: str, lr: float, kept: str):
        self.epoch, self.step, self.steps, self.what = epoch, step, steps, what
        super().__init__(
            f"training diverged in epoch {epoch} at step {step} of {steps} ({what}); nothing of that epoch was saved, "
            f"{kept}; lower --lr (it was {lr:g}) and train again"
        )

    def record(self) -> dict[str, Any]:
        """What metrics.json says of the divergence (JSON has no NaN: the values are words)."""
        return {"epoch": self.epoch, "step": self.step, "steps": self.steps, "what": self.what}


def non_finite(arrays: Mapping[str, Any]) -> list[str]:
    """The names of the arrays holding NaN or infinite values, each with how many of its values."""
    found = []
    for name, array in arrays.items():
        array = np.asarray(array)
        bad = int(array.size - np.isfinite(array).sum())
        if bad:
            found.append(f"{name} ({bad} of {array.size})")
    return found


def kept(out_dir: Any, last_good_epoch: int | None, recorded: bool) -> str:
    """What a diverged run leaves on disk, for its error line; `recorded`: whether its metrics.json records the
    divergence (`records_divergence`), which it does not where that would replace an earlier run's file."""
    metrics = (
        "metrics.json records the divergence"
        if recorded
        else "metrics.json is the earlier run's, left as it was (it does not record this divergence)"
    )
    if last_good_epoch is not None:
        return f"the checkpoint of epoch {last_good_epoch} in {out_dir} is kept, and {metrics}"
    if recorded:
        return f"no epoch was complete, so no checkpoint was written; {metrics}"
    return f"the files already in {out_dir} are left as they were, byte for byte (metrics.json does not record this)"


def records_divergence(out_dir: Any, earlier: Sequence[str]) -> bool:
    """Whether a diverged run writes its metrics.json: not over an earlier run's metrics.json (a resumed one's,
    or one --overwrite has not replaced yet), nor beside an earlier run's files (`earlier`), which it would mix
    with; the earlier files stay byte for byte as they were, and the error line says what is there."""
    return not earlier and not (Path(out_dir) / "metrics.json").exists()


def check_epoch(epoch: int, losses: np.ndarray, params_finite: bool, lr: float, kept: str) -> None:
    """Raise Diverged if a step's loss of this epoch, or a parameter after it, is NaN or infinite.

    `losses` are the epoch's per-step losses on the host; `kept` says what stays on disk.
    """
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise Diverged(epoch, int(bad[0]) + 1, len(losses), f"the loss became {losses[bad[0]]}", lr, kept)
    if not params_finite:
        raise Diverged(epoch, len(losses), len(losses), "a parameter became NaN or infinite", lr, kept)


def finite_or_none(value: float | None) -> float | None:
    """A float for JSON, which has no NaN or infinity: those become null."""
    return value if value is None or math.isfinite(value) else None

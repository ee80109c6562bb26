"""``--profile``'s capture in PyTorch: ``torch.profiler`` over a block, its trace written for Perfetto or TensorBoard.

Mirrors `mnist_jax/profiling.py`; which steps are captured is decided in `mnist_common.profiling`. The
per-kernel profile (`experiments/profile.py`) captures through it too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, tensorboard_trace_handler


@contextlib.contextmanager
def capture(folder: Path | None, device_type: str = "cpu") -> Iterator[torch.profiler.profile]:
    """Profile the block: the CPU's ops and, on a GPU, its kernels. With a `folder`, the trace is written there as
    Chrome-trace JSON (HOST_PID.TIME.pt.trace.json), which Perfetto and TensorBoard's PyTorch plugin open; the
    profile object (`key_averages()`) is yielded either way."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    if device_type != "cuda":
        quiet_kineto()
    handler = None if folder is None else tensorboard_trace_handler(str(folder))
    with torch.profiler.profile(activities=activities, on_trace_ready=handler) as prof:
        yield prof


#: Above every level of kineto's logger (VERBOSE 0, INFO 1, WARNING 2, STAGE 3, ERROR 4, USDT 5): it logs nothing.
KINETO_SILENT = "6"


def quiet_kineto() -> None:
    """Silence kineto, PyTorch's profiler library, for a profile of the CPU alone: writing the trace, it asks CUDA for
    the devices' properties whatever the activities, and where no GPU driver answers logs "ERROR ...
    gpuGetDeviceCount failed", besides its start and stop lines, on a run that succeeds. Kineto reads
    KINETO_LOG_LEVEL when it first starts, in the process's first profile; one the user set is left as it is."""
    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_SILENT)

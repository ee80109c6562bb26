"""``--profile``'s capture in PyTorch: ``torch.profiler`` over a block, its trace written for Perfetto or TensorBoard.

Mirrors `mnist_jax/profiling.py`; which steps are captured is decided in `mnist_common.profiling`. The
per-kernel profile (`experiments/profile.py`) captures through it too.
"""

from __future__ import annotations

import contextlib
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
    handler = None if folder is None else tensorboard_trace_handler(str(folder))
    with torch.profiler.profile(activities=activities, on_trace_ready=handler) as prof:
        yield prof

"""Benchmark plumbing: devices that skip with a reason, smoke mode, and what every result records."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import version

import jax
import pytest
import torch

from benchmarks.runners import BF16_DEVICES, gpu_present

DEVICES = ("cpu", "cuda")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """--bench-deadline: a benchmark that would start after it is skipped with the reason, so that a run
    inside a fixed time (benchmarks/gpu_run.sh) ends by itself and still writes what it measured."""
    deadline = item.config.getoption("bench_deadline")
    if deadline is not None and time.time() > deadline:
        pytest.skip("the run's time budget (--bench-deadline) was spent before this benchmark could start")


def device_param(device: str):
    marks = [pytest.mark.gpu] if device == "cuda" else []
    return pytest.param(device, marks=marks, id=device)


@pytest.fixture(params=[device_param(d) for d in DEVICES])
def device(request) -> str:
    if request.param == "cuda" and not gpu_present():
        pytest.skip("no CUDA GPU visible to both PyTorch and JAX (install with `pip install -e .[dev,cuda]`)")
    return request.param


def skip_precision_not_run_on(device: str, precision_name: str) -> None:
    """Skip, with the reason, a precision this device has no row for: TF32 exists on NVIDIA GPUs only,
    and bf16 rows run on BF16_DEVICES."""
    if precision_name == "tf32" and device == "cpu":
        pytest.skip("TF32 is an NVIDIA GPU mode: on the CPU both frameworks compute in full float32")
    if precision_name == "bf16" and device not in BF16_DEVICES:
        pytest.skip(f"bf16 rows run on {', '.join(BF16_DEVICES)}; the CPU's bf16 runs are in benchmarks/RESULTS.md")


@pytest.fixture
def smoke(benchmark, request) -> bool:
    """True under --benchmark-disable or --bench-dry-run: run everything once, on little data, to prove it
    still works. A dry run is also timed and written out (marked dry_run), so the report can be tested."""
    dry_run = request.config.getoption("bench_dry_run")
    if dry_run:
        benchmark.extra_info["dry_run"] = True
    return benchmark.disabled or dry_run


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{cpu_model()}, {os.cpu_count()} cores"


def environment(device: str) -> dict[str, str]:
    return {
        "device_name": device_name(device),
        "torch": torch.__version__,
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "flax": version("flax"),
        "optax": version("optax"),
        "python": platform.python_version(),
    }

"""Benchmark plumbing: devices that skip with a reason, smoke mode, the run's conditions (threads, load,
provenance: refused on a dirty tree), and what every result records."""

from __future__ import annotations

import functools
import platform
import time
from importlib.metadata import version
from typing import Any

import jax
import pytest
import torch

from benchmarks import conditions
from benchmarks.runners import BF16_DEVICES, SETTINGS, gpu_present
from mnist_common.machine import cpu_identity, describe_cpu

DEVICES = ("cpu", "cuda")


def measuring(config: pytest.Config) -> bool:
    """True when this run times benchmarks for real (not a dry run, not --benchmark-disable)."""
    return not (config.getoption("bench_dry_run") or config.getoption("benchmark_disable"))


def pytest_configure(config: pytest.Config) -> None:
    """Before anything starts a framework's backend: the same threads for both frameworks, and, for a real
    run, a tree whose commit says what was measured (else one line and exit status 2)."""
    try:
        config.bench_threads = conditions.set_threads(config.getoption("bench_threads"))
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    info = conditions.provenance()
    refusal = conditions.dirty_refusal(info)
    if measuring(config) and refusal and not config.getoption("bench_allow_dirty"):
        raise pytest.UsageError(refusal.removeprefix("error: "))  # pytest says ERROR: itself


def pytest_report_header(config: pytest.Config) -> list[str]:
    warning = conditions.load_warning() if measuring(config) else None
    info = run_conditions()
    lines = [
        f"benchmarks: {info['threads']} threads for both frameworks; commit {info['commit']} "
        f"({'dirty' if info['dirty'] else 'clean' if info['dirty'] is False else info['commit_source']})"
    ]
    return lines + ([warning] if warning else [])


@functools.cache
def run_conditions() -> dict[str, Any]:
    """Provenance and threads, the same for every row of the run (looked up once)."""
    return {**conditions.provenance(), "threads": torch.get_num_threads(), "cpu_affinity": conditions.available_cores()}


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


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return describe_cpu()


def environment(device: str) -> dict[str, Any]:
    """What every result row records: the device, the versions, the commit and the run's settings."""
    return {
        "device_name": device_name(device),
        "cpu_name": describe_cpu(),  # vendor, family, model, cores and AVX-512: the ranking depends on them
        "cpu": cpu_identity(),
        "settings": SETTINGS[device],
        **run_conditions(),
        "torch": torch.__version__,
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "flax": version("flax"),
        "optax": version("optax"),
        "python": platform.python_version(),
    }

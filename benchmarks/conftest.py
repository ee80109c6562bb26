"""Benchmark plumbing: devices that skip with a reason, smoke mode, and what every result records."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version

import jax
import pytest
import torch

from benchmarks.runners import gpu_present

DEVICES = ("cpu", "cuda")


def device_param(device: str):
    marks = [pytest.mark.gpu] if device == "cuda" else []
    return pytest.param(device, marks=marks, id=device)


@pytest.fixture(params=[device_param(d) for d in DEVICES])
def device(request) -> str:
    if request.param == "cuda" and not gpu_present():
        pytest.skip("no CUDA GPU visible to both PyTorch and JAX (install with `pip install -e .[dev,cuda]`)")
    return request.param


@pytest.fixture
def smoke(benchmark) -> bool:
    """True under --benchmark-disable: run everything once, on little data, to prove it still works."""
    return benchmark.disabled


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

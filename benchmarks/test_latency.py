"""Inference latency of one image, as a user calling ``predict`` in a loop sees it: p50 and p99.

Each timed call takes one normalized image as a NumPy array on the host, moves it to the device, runs
the library's ``predict`` (`mnist_torch.steps.predict`, `mnist_jax.steps.predict`: the model and the
softmax) and returns the ten probabilities on the host, so it pays every transfer, dispatch and
synchronization a real call pays. Per framework its modes for inference: PyTorch eager and
``torch.compile``, JAX's jitted step. The first call (the compilation) and the same warm-up for every
variant are kept out of the timings; the variants' calls run in interleaved blocks. The percentiles are
over every timed call, the p50 with a bootstrap 95% interval. Nothing asserts a time.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import torch

from benchmarks.conditions import LoadMeter
from benchmarks.conftest import environment
from benchmarks.runners import jax_device
from benchmarks.stats import median_interval, timed_blocks
from mnist_jax import steps as jax_steps
from mnist_jax.port import params_from_torch
from mnist_torch import steps as torch_steps
from mnist_torch.model import CNN

LATENCY_VARIANTS = ("torch_eager", "torch_compile", "jax_jit")
#: Timed calls per variant, in BLOCKS interleaved blocks (A B C, C B A, ...): enough for a stable 99th
#: percentile (the 1% slowest are 5 and 10 calls), and 10 side-by-side blocks for the paired ratios.
CALLS = {"cpu": 500, "cuda": 1000}
BLOCKS = 10
WARMUP_CALLS = 20


def one_image_predictor(variant: str, device: str):
    """A function from one host image (NumPy, the framework's layout) to its probabilities (1, 10) on the host."""
    torch.manual_seed(0)
    model = CNN().to(device).eval()  # untrained: the time of a forward pass does not depend on the weights' values
    if variant == "jax_jit":
        target = jax_device(device)
        params = jax.device_put(params_from_torch(model.state_dict())["params"], target)  # the same weights
        return lambda image: jax_steps.predict(params, jax.device_put(image, target))
    forward = torch.compile(model) if variant == "torch_compile" else model
    return lambda image: torch_steps.predict(forward, torch.from_numpy(image).to(device))


def test_latency(benchmark, device, mnist, jax_mnist, smoke):
    images = {"torch": mnist.test.images[:1].numpy(), "jax": jax_mnist.test.images[:1]}  # (1,1,28,28), (1,28,28,1)
    predictors, compile_seconds = {}, {}
    for variant in LATENCY_VARIANTS:
        image = images[variant.split("_")[0]]
        predictors[variant] = one_image_predictor(variant, device)
        start = time.perf_counter()
        first = predictors[variant](image)
        compile_seconds[variant] = time.perf_counter() - start if variant != "torch_eager" else None
        assert first.shape == (1, 10) and abs(float(first.sum()) - 1.0) < 1e-4  # a real answer, not a stub
        for _ in range(1 if smoke else WARMUP_CALLS):
            predictors[variant](image)
    per_block = 2 if smoke else CALLS[device] // BLOCKS
    blocks = 2 if smoke else BLOCKS
    calls: dict[str, list[list[float]]] = {}
    framework_image = {v: images[v.split("_")[0]] for v in LATENCY_VARIANTS}
    one_image = {v: (lambda p=predictors[v], image=framework_image[v]: p(image)) for v in LATENCY_VARIANTS}

    def run_all() -> None:
        calls.update(timed_blocks(one_image, blocks, per_block))

    benchmark.group = f"latency {device} batch 1 float32"
    with LoadMeter() as meter:
        benchmark.pedantic(run_all, rounds=1, iterations=1)
    rows = []
    for variant in LATENCY_VARIANTS:
        every = np.concatenate(calls[variant])
        p50, low, high = median_interval(every)
        rows.append(
            {
                "framework": variant.split("_")[0],
                "variant": variant,
                "mode": "latency",
                "device": device,
                "batch_size": 1,
                "precision": "float32",
                "compile_seconds": compile_seconds[variant],
                "latency_p50_ms": 1000 * p50,
                "latency_p50_low_ms": None if low is None else 1000 * low,
                "latency_p50_high_ms": None if high is None else 1000 * high,
                "latency_p99_ms": 1000 * float(np.percentile(every, 99)),
                "calls": int(every.size),
                # One value per block: the block's median call, so that the report can pair blocks that ran side by
                # side.
                "round_seconds": [float(np.median(b)) for b in calls[variant]],
                "images_per_s": 1 / p50,
                **meter.record(),
            }
        )
    benchmark.extra_info.update(mode="latency", device=device, rows=rows, **environment(device))

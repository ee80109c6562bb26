"""Inference latency of one image, as a user calling ``predict`` in a loop sees it: p50 and p99.

Each timed call takes one normalized image as a NumPy array on the host, moves it to the device, runs
the library's ``predict`` (`mnist_torch.train.predict`, `mnist_jax.train.predict`: the model and the
softmax) and returns the ten probabilities on the host, so it pays every transfer, dispatch and
synchronization a real call pays. Per framework its modes for inference: PyTorch eager and
``torch.compile``, JAX's jitted step. The first call (the compilation) and a warm-up are kept out of
the timings and recorded apart; the percentiles are over every timed call. Nothing asserts a time.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import pytest
import torch

from benchmarks.conftest import environment
from benchmarks.runners import jax_device
from mnist_jax import train as jax_train
from mnist_jax.port import params_from_torch
from mnist_torch import train as torch_train
from mnist_torch.model import CNN

LATENCY_VARIANTS = ("torch_eager", "torch_compile", "jax_jit")
#: Timed calls per variant: enough for a stable 99th percentile (the 1% slowest are 5 and 10 calls).
CALLS = {"cpu": 500, "cuda": 1000}
WARMUP_CALLS = 20


def one_image_predictor(variant: str, device: str):
    """A function from one host image (NumPy, the framework's layout) to its probabilities (1, 10) on the host."""
    torch.manual_seed(0)
    model = CNN().to(device).eval()  # untrained: the time of a forward pass does not depend on the weights' values
    if variant == "jax_jit":
        target = jax_device(device)
        params = jax.device_put(params_from_torch(model.state_dict())["params"], target)  # the same weights
        return lambda image: jax_train.predict(params, jax.device_put(image, target))
    forward = torch.compile(model) if variant == "torch_compile" else model
    return lambda image: torch_train.predict(forward, torch.from_numpy(image).to(device))


@pytest.mark.parametrize("variant", LATENCY_VARIANTS)
def test_latency(benchmark, variant, device, mnist, jax_mnist, smoke):
    framework = variant.split("_")[0]
    image = jax_mnist.test.images[:1] if framework == "jax" else mnist.test.images[:1].numpy()  # (1,28,28,1), (1,1,28,28)
    predict = one_image_predictor(variant, device)
    start = time.perf_counter()
    first = predict(image)
    compile_seconds = time.perf_counter() - start
    assert first.shape == (1, 10) and abs(float(first.sum()) - 1.0) < 1e-4  # a real answer, not a stub
    for _ in range(1 if smoke else WARMUP_CALLS):
        predict(image)
    benchmark.group = f"latency {device} batch 1 float32"
    benchmark.extra_info.update(
        framework=framework, variant=variant, mode="latency", device=device, batch_size=1, precision="float32",
        compile_seconds=compile_seconds if variant != "torch_eager" else None, **environment(device),
    )
    benchmark.pedantic(predict, args=(image,), rounds=2 if smoke else CALLS[device], iterations=1)
    if not benchmark.disabled:
        calls = np.asarray(benchmark.stats.stats.data)
        benchmark.extra_info.update(
            latency_p50_ms=1000 * float(np.percentile(calls, 50)),
            latency_p99_ms=1000 * float(np.percentile(calls, 99)),
            images_per_s=1 / float(np.median(calls)),
        )

"""Training-step and inference throughput, PyTorch vs JAX, same model, batches and precision.

Run: pytest benchmarks --benchmark-only [--benchmark-json results.json]
Every result's extra_info carries images_per_s, the variant, device, batch size, precision,
the compile seconds kept out of the timed rounds, and the versions. Nothing here asserts a time.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import environment, skip_precision_not_run_on
from benchmarks.runners import (
    EVAL_VARIANTS,
    TRAIN_VARIANTS,
    Round,
    images_per_round,
    jax_round,
    peak_memory,
    precision,
    reset_peak_memory,
    torch_round,
)

ROLLED_LOOPS = ("jax_scan", "jax_epoch")
ROUND_BUDGET_S = {"cpu": 5.0, "cuda": 2.0}  # timed seconds per benchmark: bounds the suite's length
MAX_ROUNDS = 20


def rounds_for(round_: Round, device: str) -> int:
    """As many rounds as fit the budget (at least one), judged by the last untimed round."""
    return max(1, min(MAX_ROUNDS, int(ROUND_BUDGET_S[device] / round_.last_untimed_seconds)))


def run_benchmark(benchmark, mode, variant, device, batch_size, precision_name, mnist, jax_mnist, smoke):
    skip_precision_not_run_on(device, precision_name)
    if variant == "torch_cudagraph" and device != "cuda":
        pytest.skip("CUDA graphs exist on NVIDIA GPUs only (`python -m mnist_torch.train --mode cuda-graphs`)")
    if smoke and device == "cpu" and variant in ROLLED_LOOPS and batch_size > 128:
        pytest.skip("a rolled loop on XLA:CPU takes ~30 s per step at batch 1024 (the trap in benchmarks/RESULTS.md); "
                    "smoke runs check it at batch 128, full runs measure it")
    framework = variant.split("_")[0]
    reset_peak_memory(device)
    with precision(precision_name):
        images = images_per_round(mode, device, batch_size, smoke)
        if variant.startswith("torch"):
            round_ = torch_round(variant, mode, mnist, device, batch_size, images, precision_name)
        else:
            split = jax_mnist.test if mode == "eval" else jax_mnist.train
            round_ = jax_round(variant, mode, split, device, batch_size, images, mnist, precision_name)
        rounds = 1 if smoke else rounds_for(round_, device)
        benchmark.group = f"{mode} {device} batch {batch_size} {precision_name}"
        benchmark.extra_info.update(
            framework=framework, variant=variant, mode=mode, device=device, batch_size=batch_size,
            precision=precision_name, compile_seconds=round_.compile_seconds, warmup_seconds=round_.warmup_seconds,
            images_per_round=round_.images,
            steps_per_round=round_.steps, **environment(device),
        )
        benchmark.pedantic(round_.run, rounds=rounds, iterations=1)
        benchmark.extra_info.update(peak_memory(device, framework, round_))
    if not benchmark.disabled:
        benchmark.extra_info["images_per_s"] = round_.images / benchmark.stats.stats.median


@pytest.mark.parametrize("precision_name", ["float32", "tf32", "bf16"])
@pytest.mark.parametrize("batch_size", [128, 1024])
@pytest.mark.parametrize("variant", TRAIN_VARIANTS)
def test_train_step(benchmark, variant, batch_size, precision_name, device, mnist, jax_mnist, smoke):
    run_benchmark(benchmark, "train", variant, device, batch_size, precision_name, mnist, jax_mnist, smoke)


@pytest.mark.parametrize("precision_name", ["float32", "tf32"])  # evaluation is float32 in both trainers, bf16 or not
@pytest.mark.parametrize("batch_size", [128, 1024])
@pytest.mark.parametrize("variant", EVAL_VARIANTS)
def test_eval(benchmark, variant, batch_size, precision_name, device, mnist, jax_mnist, smoke):
    run_benchmark(benchmark, "eval", variant, device, batch_size, precision_name, mnist, jax_mnist, smoke)

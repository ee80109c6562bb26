"""Training-step and inference throughput, PyTorch vs JAX, same model, batches and precision.

Run: pytest benchmarks --benchmark-only [--benchmark-json results.json]
One benchmark per comparison (mode, device, batch size, precision) builds every variant, warms each up
the same number of rounds, then times them interleaved, round by round, the order reversed every other
cycle (`benchmarks.stats.interleaved_schedule`), so that a ratio compares rounds that ran side by side.
Its extra_info holds one row per variant: every round's seconds (by cycle), images/s as the median with
its 95% interval, the compile seconds kept out of the rounds, the load while it ran, the versions and
the commit. The report computes the paired ratios from the rounds. Nothing here asserts a time.
"""

from __future__ import annotations

import time

import pytest

from benchmarks.conditions import LoadMeter, loaded
from benchmarks.conftest import environment, skip_precision_not_run_on
from benchmarks.runners import (
    EVAL_VARIANTS,
    TRAIN_VARIANTS,
    Round,
    autotuned,
    build_round,
    precision,
)
from benchmarks.stats import interleaved_schedule, rate_summary

ROLLED_LOOPS = ("jax_scan", "jax_epoch")
#: Timed seconds each variant should get, and the fewest and most rounds it gets to fill them.
ROUND_BUDGET_S = {"cpu": 10.0, "cuda": 3.0}
MIN_ROUNDS, MAX_ROUNDS = 10, 40
#: A variant whose MIN_ROUNDS would take longer than this (the rolled loops on the CPU; measured:
#: benchmarks/RESULTS.md, 'Design measurements') gets as many rounds as fit in it, at least one, and its row
#: says how many: the suite stays runnable. On the CPU it lets a 16-step round at batch 1024 (about 9 s in
#: PyTorch eager) still get the 5 rounds an interval needs (`stats.MIN_VALUES_FOR_INTERVAL`).
SLOW_VARIANT_CAP_S = {"cpu": 60.0, "cuda": 20.0}
SMOKE_ROUNDS = 2


def rounds_for(round_: Round, device: str, smoke: bool) -> int:
    """Timed rounds for a variant, judged by its last warm-up round."""
    if smoke:
        return SMOKE_ROUNDS
    seconds = round_.last_untimed_seconds
    if MIN_ROUNDS * seconds > SLOW_VARIANT_CAP_S[device]:
        return max(1, int(SLOW_VARIANT_CAP_S[device] / seconds))
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(ROUND_BUDGET_S[device] / seconds)))


def not_run_reason(variant: str, device: str, batch_size: int, smoke: bool) -> str | None:
    """Why a variant has no row in this comparison, or None when it runs."""
    if variant == "torch_cudagraph" and device != "cuda":
        return "CUDA graphs exist on NVIDIA GPUs only (`python -m mnist_torch.train --mode cuda-graphs`)"
    if device == "cpu" and variant in ROLLED_LOOPS and batch_size > 128:
        return (
            "a rolled loop on XLA:CPU: 15-30 s per step at batch 1024, minutes per round (the trap in "
            "benchmarks/RESULTS.md), measured at batch 128 only"
        )
    return None


def run_comparison(benchmark, mode, device, batch_size, precision_name, mnist, jax_mnist, smoke) -> None:
    skip_precision_not_run_on(device, precision_name)
    variants = TRAIN_VARIANTS if mode == "train" else EVAL_VARIANTS
    skipped = {v: r for v in variants if (r := not_run_reason(v, device, batch_size, smoke))}
    running = [v for v in variants if v not in skipped]
    benchmark.group = f"{mode} {device} batch {batch_size} {precision_name}"
    with precision(precision_name), autotuned(device):
        rounds = {v: build_round(v, mode, device, batch_size, precision_name, mnist, jax_mnist, smoke) for v in running}
        counts = {v: rounds_for(r, device, smoke) for v, r in rounds.items()}
        schedule = interleaved_schedule(counts)
        cycles = max(counts.values())
        seconds: dict[str, list[float | None]] = {v: [None] * cycles for v in running}
        other_seconds = dict.fromkeys(running, 0.0)

        def run_all() -> None:
            for cycle, variant in schedule:
                with LoadMeter() as meter:
                    start = time.perf_counter()
                    rounds[variant].run()
                    seconds[variant][cycle] = time.perf_counter() - start
                other_seconds[variant] += meter.other_cores * seconds[variant][cycle]

        with LoadMeter() as whole:
            benchmark.pedantic(run_all, rounds=1, iterations=1)
    load = whole.record()
    rows = []
    for variant in variants:
        row = {
            "framework": variant.split("_")[0],
            "variant": variant,
            "mode": mode,
            "device": device,
            "batch_size": batch_size,
            "precision": precision_name,
        }
        if variant in skipped:
            rows.append({**row, "not_run": skipped[variant]})
            continue
        round_ = rounds[variant]
        timed = [s for s in seconds[variant] if s is not None]
        rate = rate_summary(timed, round_.images)
        other_cores = other_seconds[variant] / sum(timed)
        rows.append(
            {
                **row,
                "compile_seconds": round_.compile_seconds,
                "warmup_seconds": round_.warmup_seconds,
                "images_per_round": round_.images,
                "steps_per_round": round_.steps,
                "round_seconds": seconds[variant],
                "rounds": len(timed),
                "images_per_s": rate["median"],
                "images_per_s_low": rate["low"],
                "images_per_s_high": rate["high"],
                "load_before": load["load_before"],
                "load_after": load["load_after"],
                "other_processes_cores": round(other_cores, 3),
                "loaded": loaded(other_cores),
            }
        )
    benchmark.extra_info.update(
        mode=mode, device=device, batch_size=batch_size, precision=precision_name, rows=rows, **environment(device)
    )


@pytest.mark.parametrize("precision_name", ["float32", "tf32", "bf16"])
@pytest.mark.parametrize("batch_size", [128, 1024])
def test_train_step(benchmark, batch_size, precision_name, device, mnist, jax_mnist, smoke):
    run_comparison(benchmark, "train", device, batch_size, precision_name, mnist, jax_mnist, smoke)


@pytest.mark.parametrize("precision_name", ["float32", "tf32"])  # evaluation is float32 in both trainers, bf16 or not
@pytest.mark.parametrize("batch_size", [128, 1024])
def test_eval(benchmark, batch_size, precision_name, device, mnist, jax_mnist, smoke):
    run_comparison(benchmark, "eval", device, batch_size, precision_name, mnist, jax_mnist, smoke)

"""Cold start and break-even of each compiled path (`benchmarks/cold_start.py` says what is measured and how).

Run: pytest benchmarks --benchmark-only -k cold_start [--benchmark-json results.json]
One row per compiled path and device: the compile seconds from empty caches (``cold_compile_s``) and from
a warm on-disk cache (``warm_compile_s``), each in its own fresh process; the steady step times of the
compiled path and of its framework's eager path; and the break-even, the training steps after which
compiling has paid for itself (None: never). Every process runs with the same thread count for both
frameworks (the CPU cores of the affinity mask). A full run repeats each cold/warm pair
`cold_start.REPEATS` times (3 on a GPU, 2 on the CPU, which keeps the CPU test short; measured:
benchmarks/RESULTS.md, 'Design measurements'), a dry run once, with 2 timed steps instead of 20. The
whole measurement is timed once (`benchmark.pedantic`, one round). Nothing here asserts a speed: only
that the figures are real and the caches did their part.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import cold_start
from benchmarks.conditions import ProcessError, available_cores
from benchmarks.conftest import environment

#: PyTorch's eager step time per (device, steps), from the first PyTorch row of the session: the JAX row's
#: cross-framework break-even uses it, or measures it in one more process when no PyTorch row ran.
_TORCH_EAGER_STEP_S: dict[tuple[str, int], float] = {}

ROW_KEYS = (
    "framework",
    "variant",
    "mode",
    "device",
    "batch_size",
    "precision",
    "compile_seconds",
    "cold_compile_s",
    "warm_compile_s",
    "compiled_step_s",
    "eager_step_s",
    "eager_variant",
    "torch_eager_step_s",
    "break_even_cold_steps",
    "break_even_warm_steps",
    "break_even_cold_vs_torch_eager",
    "break_even_warm_vs_torch_eager",
)


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_caches(variant: str, processes: dict) -> None:
    """The cold processes compiled from nothing and the warm ones loaded from the cache (a CUDA graph has none)."""
    if variant == "jax_jit":
        for run in processes["cold"]:
            assert run["jax_cache_lookups"]["hits"] == 0 and run["jax_cache_lookups"]["misses"] >= 1, run[
                "jax_cache_lookups"
            ]
        for run in processes["warm"]:
            assert run["jax_cache_lookups"]["hits"] >= 1, (
                f"the warm JAX process did not load from the cache: {run['jax_cache_lookups']}"
            )
    elif variant == "torch_compile":
        for run in processes["cold"]:
            assert not any(name.endswith("_hit") for name in run["cache_counters"]), run["cache_counters"]
        for run in processes["warm"]:
            assert run["cache_counters"].get("inductor.fxgraph_cache_hit", 0) >= 1, (
                f"the warm torch.compile process did not load from Inductor's cache: {run['cache_counters']}"
            )


@pytest.mark.parametrize("variant", cold_start.COMPILED_VARIANTS)
def test_cold_start(benchmark, variant, device, smoke, tmp_path):
    if variant == "torch_cudagraph" and device != "cuda":
        pytest.skip("CUDA graphs exist on NVIDIA GPUs only (`python -m mnist_torch.train --mode cuda-graphs`)")
    framework = variant.split("_")[0]
    repeats = 1 if smoke else cold_start.REPEATS[device]
    steps = cold_start.STEPS["smoke" if smoke else "full"]
    results = {}

    def measure() -> None:
        results["row"] = cold_start.measure(
            variant, device, repeats, steps, tmp_path, _TORCH_EAGER_STEP_S.get((device, steps))
        )

    benchmark.group = f"cold start {device} batch {cold_start.BATCH_SIZE} {cold_start.PRECISION}"
    try:
        benchmark.pedantic(measure, rounds=1, iterations=1)
    except ProcessError as err:
        pytest.fail(str(err), pytrace=False)
    row = results["row"]
    processes = row.pop("processes")
    assert tuple(row) == ROW_KEYS
    benchmark.extra_info.update(**row, **environment(device))
    if framework == "torch":
        _TORCH_EAGER_STEP_S.setdefault((device, steps), row["eager_step_s"])

    assert len(row["cold_compile_s"]) == len(row["warm_compile_s"]) == repeats
    assert all(positive(s) for s in row["cold_compile_s"] + row["warm_compile_s"]), row
    for key in ("compile_seconds", "compiled_step_s", "eager_step_s", "torch_eager_step_s"):
        assert positive(row[key]), (key, row[key])
    for key in (
        "break_even_cold_steps",
        "break_even_warm_steps",
        "break_even_cold_vs_torch_eager",
        "break_even_warm_vs_torch_eager",
    ):
        assert row[key] is None or (isinstance(row[key], int) and row[key] >= 0), (key, row[key])
    if framework == "torch":
        assert row["break_even_cold_vs_torch_eager"] is None and row["break_even_warm_vs_torch_eager"] is None
    threads = available_cores()
    assert all(run["threads"] == threads and run["steps"] == steps for run in processes["cold"] + processes["warm"])
    check_caches(variant, processes)

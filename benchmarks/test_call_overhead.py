"""The host's cost of one compiled call, per way of writing a JAX training step: an empty-ish step, timed alone.

Each variant calls a compiled step that only counts the step (`step + 1`), on the full training state (the
CNN's parameters and SGD momentum, 17 arrays), the way the training rows call their real step: so what is
timed is what JAX and Flax do in Python and C++ around each call (flattening the arguments, NNX's graph
walk, dispatch), not arithmetic. `jax_jit` is Linen's `TrainState` through `jax.jit`; the NNX variants are
those of `benchmarks/runners.py` (`mnist_jax.steps_nnx`), and `jax_nnx_cached`, `nnx.cached_partial`. The
calls run in interleaved blocks, as the latency benchmark's; the figure is the median call with a bootstrap
95% interval, and the report pairs the blocks for the ratio against `jax_jit`. Nothing asserts a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from benchmarks.conditions import LoadMeter
from benchmarks.conftest import environment
from benchmarks.runners import jax_device, train_config
from benchmarks.stats import median_interval, timed_blocks
from mnist_jax import steps_nnx
from mnist_jax import tuned as jax_tuned

OVERHEAD_VARIANTS = ("jax_jit", "jax_nnx_jit", "jax_nnx_tree", "jax_nnx_cached", "jax_nnx_split", "jax_nnx_leaves")
#: Calls per block and blocks: a call takes 0.1-10 ms on a CPU, so a block stays under a second or so.
CALLS_PER_BLOCK = {"cpu": 100, "cuda": 200}
BLOCKS = 10
WARMUP_CALLS = 10


def _count(model: nnx.Module, optimizer: nnx.Optimizer) -> None:
    optimizer.step[...] += 1


_count_nnx = nnx.jit(_count)
_count_tree = nnx.jit(_count, graph=False)


def _count_split(graphdef: nnx.GraphDef, state: nnx.State) -> nnx.State:
    model, optimizer = nnx.merge(graphdef, state)
    optimizer.step[...] += 1
    return nnx.split((model, optimizer))[1]


def counting_call(variant: str, device: str) -> tuple[Callable[[], None], Callable[[], object], Callable[[], int]]:
    """A function making one call of the variant's empty-ish step, one returning what to wait for, and one
    returning the step count the calls have reached (so a test can see every call did its work)."""
    dev = jax_device(device)
    config = train_config("float32")
    if variant == "jax_jit":
        count = jax.jit(lambda state: state.replace(step=state.step + 1), donate_argnums=0)
        holder = {"state": jax.device_put(jax_tuned.create_state(0, config, dev), dev)}

        def call() -> None:
            holder["state"] = count(holder["state"])

        return call, lambda: holder["state"], lambda: int(holder["state"].step)
    with jax.default_device(dev):
        model, optimizer = steps_nnx.create_model(0, config, dev)
    if variant in ("jax_nnx_jit", "jax_nnx_tree", "jax_nnx_cached"):
        if variant == "jax_nnx_cached":  # as `steps_nnx.cached_train_step` binds it
            with nnx.set_graph_mode(True), nnx.set_graph_updates(True):
                call = nnx.cached_partial(nnx.jit(_count, graph=True, graph_updates=True), model, optimizer)
        else:
            count = _count_nnx if variant == "jax_nnx_jit" else _count_tree

            def call() -> None:
                count(model, optimizer)

        return call, lambda: nnx.state(optimizer), lambda: int(optimizer.step[...])
    graphdef, state = steps_nnx.split(model, optimizer)
    if variant == "jax_nnx_split":
        count_split = jax.jit(_count_split, static_argnums=0, donate_argnums=1)
        holder = {"state": state}

        def call() -> None:
            holder["state"] = count_split(graphdef, holder["state"])

        return call, lambda: holder["state"], lambda: int(steps_nnx.merge(graphdef, holder["state"])[1].step[...])
    leaves, treedef = jax.tree.flatten(state)

    def count_leaves(leaves: list[jax.Array]) -> list[jax.Array]:
        return jax.tree.leaves(_count_split(graphdef, jax.tree.unflatten(treedef, leaves)))

    count = jax.jit(count_leaves, donate_argnums=0)
    holder = {"leaves": leaves}

    def call() -> None:
        holder["leaves"] = count(holder["leaves"])

    def steps_done() -> int:
        return int(steps_nnx.merge(graphdef, jax.tree.unflatten(treedef, holder["leaves"]))[1].step[...])

    return call, lambda: holder["leaves"], steps_done


def test_call_overhead(benchmark, device, smoke):
    calls, results, counts, compile_seconds = {}, {}, {}, {}
    for variant in OVERHEAD_VARIANTS:
        calls[variant], results[variant], counts[variant] = counting_call(variant, device)
        start = time.perf_counter()
        calls[variant]()
        jax.block_until_ready(results[variant]())
        compile_seconds[variant] = time.perf_counter() - start
        for _ in range(1 if smoke else WARMUP_CALLS):
            calls[variant]()
        jax.block_until_ready(results[variant]())
    per_block = 5 if smoke else CALLS_PER_BLOCK[device]
    blocks = 2 if smoke else BLOCKS
    timed: dict[str, list[list[float]]] = {}

    def run_all() -> None:  # each block's queue drained before the next variant's block
        drain = {v: (lambda v=v: jax.block_until_ready(results[v]())) for v in OVERHEAD_VARIANTS}
        timed.update(timed_blocks(calls, blocks, per_block, drain))

    benchmark.group = f"call overhead {device}"
    with LoadMeter() as meter:
        benchmark.pedantic(run_all, rounds=1, iterations=1)
    rows = []
    for variant in OVERHEAD_VARIANTS:
        every = np.concatenate(timed[variant])
        median, low, high = median_interval(every)
        rows.append(
            {
                "framework": "jax",
                "variant": variant,
                "mode": "overhead",
                "device": device,
                "batch_size": 0,
                "precision": "float32",
                "compile_seconds": compile_seconds[variant],
                "overhead_us": 1e6 * median,
                "overhead_low_us": None if low is None else 1e6 * low,
                "overhead_high_us": None if high is None else 1e6 * high,
                "calls": int(every.size),
                # One value per block, its median call, so that the report can pair blocks that ran side by side.
                "round_seconds": [float(np.median(b)) for b in timed[variant]],
                "images_per_s": 1 / median,
                **meter.record(),
            }
        )
    made = 1 + (1 if smoke else WARMUP_CALLS) + per_block * blocks
    assert {v: counts[v]() for v in OVERHEAD_VARIANTS} == dict.fromkeys(OVERHEAD_VARIANTS, made)  # real calls
    benchmark.extra_info.update(mode="overhead", device=device, rows=rows, **environment(device))

"""Cold start and break-even of the compiled paths: what compiling costs, from empty caches and from a warm
one, and after how many training steps it has paid for itself against eager execution.

Each measurement is a fresh process (``python -m benchmarks.cold_start VARIANT --device cpu|cuda
--cache-dir DIR --steps N``, one JSON line on stdout), whose on-disk compilation caches all live in DIR:
PyTorch's Inductor and Triton caches (``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``) and JAX's
persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``, every compilation cached, as
`mnist_jax.compilation_cache.use_compilation_cache` does for the trainer). A new empty DIR gives the cold
figure; a second process on the same DIR the warm one. In-memory caches die with each process.

What one process measures, at batch 128, float32, on real MNIST batches already on the device:

* ``compile_s``: torch_compile, the forward pass through ``torch.compile`` (the trainer's --mode compile,
  as `benchmarks.runners.torch_round` builds it); it compiles lazily in the first call and may again in
  the second, so compile_s is the wall time of those two training steps less two steady compiled steps.
  One plain eager step runs before them, so that PyTorch's lazy first-call set-up (thread pools, oneDNN
  primitives), which eager pays too, is not counted as compilation. torch_cudagraph, the whole step
  captured as a CUDA graph (`mnist_torch.tuned.CapturedStep`): its capture seconds, which include
  the three warm-up steps it runs and undoes (they train nothing). A graph has no on-disk cache, so its
  warm figure is a second cold one. jax_jit, the jitted `mnist_jax.steps.train_step`: lower + compile
  (`compile_train`, as `runners.jax_round` does), nothing else.
* ``compiled_step_s`` and ``eager_step_s``: the median of N synchronized steps (`jax.block_until_ready`,
  `torch.cuda.synchronize`) of the compiled path and of its framework's eager path, after warm-up.
  PyTorch eager is `mnist_torch.steps.train_step` on the plain model. JAX eager is the same
  `train_step` run op by op under `jax.disable_jit()`: flax and optax run under it unchanged (every
  operation dispatched on its own, each primitive compiled once, on first use), and the process checks
  that the jitted step's cache did not grow, i.e. that nothing compiled the step as a whole.

The break-even is ``ceil(compile_s / (eager_step_s - compiled_step_s))`` training steps, None ("never")
when the compiled step is not faster (`break_even`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.conditions import PROCESS_TIMEOUT_S, available_cores, run_json_process
from mnist_common.config import TrainConfig

#: The compiled paths measured, and the process-only "torch_eager" (eager steps alone, for the JAX row's
#: cross-framework break-even when no PyTorch row measured them).
COMPILED_VARIANTS = ("torch_compile", "jax_jit", "torch_cudagraph")
CLI_VARIANTS = (*COMPILED_VARIANTS, "torch_eager")
EAGER_VARIANTS = {"torch": "torch_eager", "jax": "jax_eager"}
BATCH_SIZE = TrainConfig.batch_size  # the trainers' default
PRECISION = "float32"
#: Untimed steps before the N timed ones of each path (the compiled path's compiling calls come first).
WARMUP_STEPS = 2
#: Pairs of processes (cold, warm) per compiled path in a full run; a smoke run (--bench-dry-run) runs one.
#: Two on the CPU: there a pair is slow (a cold torch.compile, and JAX's eager steps compile each primitive
#: on first use), and three would make the test too long for the suite (measured: benchmarks/RESULTS.md,
#: 'Design measurements').
REPEATS = {"cpu": 2, "cuda": 3}
#: Timed steps per path and process: full run, smoke run.
STEPS = {"full": 20, "smoke": 2}


def cache_environment(cache_dir: Path) -> dict[str, str]:
    """Every on-disk compilation cache of both frameworks inside `cache_dir`."""
    return {
        "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"),
        "TRITON_CACHE_DIR": str(cache_dir / "triton"),
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir / "jax"),
        "JAX_ENABLE_COMPILATION_CACHE": "true",  # the test session turns it off (conftest.py); here it is the point
    }


def break_even(compile_s: float, eager_step_s: float, compiled_step_s: float) -> int | None:
    """Training steps after which the compiled path has caught up with eager, counting its compile seconds;
    None when its step is not faster, so it never does."""
    saved = eager_step_s - compiled_step_s
    if saved <= 0:
        return None
    return max(0, math.ceil(compile_s / saved))


def run_process(
    variant: str, device: str, cache_dir: Path, steps: int, timeout: float = PROCESS_TIMEOUT_S
) -> dict[str, Any]:
    """One fresh measuring process on `cache_dir`; its JSON result, or conditions.ProcessError with its stderr."""
    return run_json_process(
        ["benchmarks.cold_start", variant, "--device", device, "--cache-dir", str(cache_dir), "--steps", str(steps)],
        cache_environment(cache_dir),
        timeout,
    )


def measure(
    variant: str, device: str, repeats: int, steps: int, work_dir: Path, torch_eager_step_s: float | None = None
) -> dict[str, Any]:
    """The result row of one compiled path: `repeats` pairs of processes (cold on a new empty cache folder,
    then warm on the same folder). For jax_jit, `torch_eager_step_s` is PyTorch's eager step on the same
    device, measured by one more process when not given. Also returns the processes' own results under
    "processes" (not a row key)."""
    framework = variant.split("_")[0]
    cold, warm = [], []
    for r in range(repeats):
        cache_dir = Path(tempfile.mkdtemp(prefix=f"{variant}-{device}-{r}-", dir=work_dir))
        cold.append(run_process(variant, device, cache_dir, steps))
        warm.append(run_process(variant, device, cache_dir, steps))
    runs = cold + warm
    compiled_step_s = statistics.median(run["compiled_step_s"] for run in runs)
    eager_step_s = statistics.median(run["eager_step_s"] for run in runs)
    if framework == "torch":
        torch_eager_step_s = eager_step_s
    elif torch_eager_step_s is None:
        cache_dir = Path(tempfile.mkdtemp(prefix=f"torch_eager-{device}-", dir=work_dir))
        torch_eager_step_s = run_process("torch_eager", device, cache_dir, steps)["eager_step_s"]
    cold_s = [run["compile_s"] for run in cold]
    warm_s = [run["compile_s"] for run in warm]
    compile_seconds = statistics.median(cold_s)
    warm_median = statistics.median(warm_s)
    jax_row = framework == "jax"
    return {
        "framework": framework,
        "variant": variant,
        "mode": "cold_start",
        "device": device,
        "batch_size": BATCH_SIZE,
        "precision": PRECISION,
        "compile_seconds": compile_seconds,
        "cold_compile_s": cold_s,
        "warm_compile_s": warm_s,
        "compiled_step_s": compiled_step_s,
        "eager_step_s": eager_step_s,
        "eager_variant": EAGER_VARIANTS[framework],
        "torch_eager_step_s": torch_eager_step_s,
        "break_even_cold_steps": break_even(compile_seconds, eager_step_s, compiled_step_s),
        "break_even_warm_steps": break_even(warm_median, eager_step_s, compiled_step_s),
        "break_even_cold_vs_torch_eager": break_even(compile_seconds, torch_eager_step_s, compiled_step_s)
        if jax_row
        else None,
        "break_even_warm_vs_torch_eager": break_even(warm_median, torch_eager_step_s, compiled_step_s)
        if jax_row
        else None,
        "processes": {"cold": cold, "warm": warm},
    }


# --- the measuring process ---------------------------------------------------------------------------


def _median_step(step: Callable[[int], None], first: int, steps: int) -> float:
    """Median seconds of `steps` calls step(first), step(first + 1), ...; each call ends synchronized."""
    times = []
    for k in range(first, first + steps):
        start = time.perf_counter()
        step(k)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _torch_process(variant: str, device: str, steps: int) -> dict[str, Any]:
    import torch
    from torch._dynamo.utils import counters

    from mnist_common.batches import batch_order
    from mnist_common.config import TrainConfig
    from mnist_torch import steps as torch_steps
    from mnist_torch import train as torch_train
    from mnist_torch import tuned as torch_tuned
    from mnist_torch.data import load_mnist
    from mnist_torch.tuned import CapturedStep

    # runners.precision("float32"): full float32 matmuls and convolutions (no TF32 on an NVIDIA GPU), as JAX below.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(device)
    data = load_mnist()
    idx = batch_order(0, 1, len(data.train.labels), BATCH_SIZE)[: WARMUP_STEPS + steps + 2]
    batches = [(data.train.images[i].to(dev), data.train.labels[i].to(dev)) for i in torch.from_numpy(idx)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    config = TrainConfig(precision=PRECISION)

    def eager_step(state):
        def step(k: int) -> None:
            torch_steps.train_step(state, batches[k % len(batches)])
            sync()

        return step

    eager = eager_step(torch_tuned.create_state(0, config, dev))
    start = time.perf_counter()
    eager(0)  # PyTorch's lazy first-call set-up, which eager pays too: not compilation
    eager_first_s = time.perf_counter() - start
    result: dict[str, Any] = {"eager_first_step_s": eager_first_s, "torch_threads": torch.get_num_threads()}

    state = torch_tuned.create_state(0, config, dev)
    if variant == "torch_compile":
        state = state._replace(forward=torch.compile(state.model))
        compiled = eager_step(state)
        calls = []
        for k in range(2):  # compiles lazily in the first call, possibly again in the second (runners.torch_round)
            start = time.perf_counter()
            compiled(k)
            calls.append(time.perf_counter() - start)
        compiled_step_s = _median_step(compiled, 2, steps)
        result.update(
            compile_calls_s=calls, compile_s=sum(calls) - len(calls) * compiled_step_s, compiled_step_s=compiled_step_s
        )
        result["cache_counters"] = {
            f"{group}.{name}": n
            for group in ("inductor", "aot_autograd")
            for name, n in counters[group].items()
            if "cache" in name
        }
    elif variant == "torch_cudagraph":
        train = torch_train.Split(data.train.images.to(dev), data.train.labels.to(dev))
        captured = CapturedStep(torch_steps.train_step, state, train, BATCH_SIZE)
        order = torch.from_numpy(idx).to(dev)

        def replay(k: int) -> None:
            captured(order[k % len(order)])
            sync()

        for k in range(WARMUP_STEPS):
            replay(k)
        result.update(compile_s=captured.capture_seconds, compiled_step_s=_median_step(replay, WARMUP_STEPS, steps))
    else:
        result.update(compile_s=None, compiled_step_s=None)
    for k in range(1, WARMUP_STEPS):
        eager(k)
    result["eager_step_s"] = _median_step(eager, WARMUP_STEPS, steps)
    return result


def _jax_process(device: str, steps: int) -> dict[str, Any]:
    import jax

    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update(
        "jax_default_matmul_precision", "float32"
    )  # runners.precision("float32"): no TF32, as PyTorch above
    from mnist_common.batches import batch_order
    from mnist_common.config import TrainConfig
    from mnist_jax import steps as jax_steps
    from mnist_jax import tuned as jax_tuned
    from mnist_jax.compilation_cache import count_cache_lookups, use_compilation_cache
    from mnist_jax.data import load_mnist

    cache_dir = use_compilation_cache()  # JAX_COMPILATION_CACHE_DIR, and every compilation cached
    dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
    data = load_mnist()
    idx = batch_order(0, 1, len(data.train.labels), BATCH_SIZE)[: WARMUP_STEPS + steps + 2]
    batches = [jax.device_put((data.train.images[i], data.train.labels[i]), dev) for i in idx]
    config = TrainConfig(precision=PRECISION)
    state = jax.device_put(jax_tuned.create_state(0, config, dev), dev)
    eager_state = jax.device_put(jax_tuned.create_state(0, config, dev), dev)  # `state` is donated to the compiled step
    jax.block_until_ready((batches, state, eager_state))

    with count_cache_lookups() as lookups:
        start = time.perf_counter()
        compiled = jax_tuned.compile_train(jax_steps.train_step.lower(state, batches[0]), dev.platform)
        compile_s = time.perf_counter() - start
    holder = {"compiled": state, "eager": eager_state}

    def compiled_step(k: int) -> None:
        holder["compiled"], _ = compiled(holder["compiled"], batches[k % len(batches)])
        jax.block_until_ready(holder["compiled"])

    def eager_step(k: int) -> None:
        with jax.disable_jit():  # op by op: jax.jit functions run their Python body
            holder["eager"], _ = jax_steps.train_step(holder["eager"], batches[k % len(batches)])
        jax.block_until_ready(holder["eager"])

    for k in range(WARMUP_STEPS):
        compiled_step(k)
    compiled_step_s = _median_step(compiled_step, WARMUP_STEPS, steps)

    jitted_before = jax_steps.train_step._cache_size()
    start = time.perf_counter()
    eager_step(0)  # compiles each primitive on first use: eager's own warm-up
    eager_first_s = time.perf_counter() - start
    for k in range(1, WARMUP_STEPS):
        eager_step(k)
    eager_step_s = _median_step(eager_step, WARMUP_STEPS, steps)
    if jax_steps.train_step._cache_size() != jitted_before:
        raise RuntimeError("the JAX eager step compiled the jitted train_step: jax.disable_jit() did not take effect")
    return {
        "compile_s": compile_s,
        "compiled_step_s": compiled_step_s,
        "eager_step_s": eager_step_s,
        "eager_first_step_s": eager_first_s,
        "jax_cache_dir": str(cache_dir),
        "jax_cache_lookups": dict(lookups),
        "platform": dev.platform,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m benchmarks.cold_start", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("variant", choices=CLI_VARIANTS)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--cache-dir", type=Path, required=True, help="the compilation caches' folder: new and empty for a cold start"
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="timed steps of each path (their median is the step time)"
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    # Before torch or jax is imported: both read these when they start. The same thread count for both.
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(cache_environment(args.cache_dir.resolve()))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(available_cores()))
    if args.variant == "jax_jit":
        result = _jax_process(args.device, args.steps)
    else:
        result = _torch_process(args.variant, args.device, args.steps)
    result.update(
        variant=args.variant,
        device=args.device,
        batch_size=BATCH_SIZE,
        precision=PRECISION,
        steps=args.steps,
        threads=int(os.environ["OMP_NUM_THREADS"]),
        affinity_cores=available_cores(),
        cache_dir=str(args.cache_dir),
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

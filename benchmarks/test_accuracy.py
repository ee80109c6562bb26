"""Accuracy and time to 99%: each trainer, as a user runs it, over several seeds.

Every run is the real command (`python -m mnist_jax.train [--api A]`, `python -m mnist_torch.train --mode M`) in
a fresh process, so that each framework's own settings act exactly as they ship: the trainers'
deterministic settings in the "shipped" column, and `--nondeterministic` (each framework's fastest: cuDNN
and XLA autotuning, atomics allowed) in the "fastest" column. Seeds run interleaved (seed 0 of every
trainer, then seed 1 in the reverse order, ...). Seed 0 trains all --epochs for the final accuracy; the
other seeds stop at the first epoch that reaches 99% (`--stop-at-accuracy`), since time to 99% needs no
more. Every run compiles from empty caches (JAX's persistent cache off, a new Inductor cache folder).
Records per trainer every run (its curve, epoch seconds, time to 99%) and the summaries the report
shows: mean, min and max time to 99%, the share of seeds that reach it, the final accuracy's mean and
spread. Time to 99% counts training seconds only (epochs up to the first at >= 99%), not start-up,
compilation or evaluation, which are recorded apart. The original project's 98.76% is recorded beside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.conditions import REPO, LoadMeter, thread_environment
from benchmarks.conftest import environment, skip_precision_not_run_on
from benchmarks.stats import mean_and_spread
from mnist_common.report import ORIGINAL_ACCURACY

#: Each framework's trainer in each of its execution modes: the command's module and flags. JAX's also in Flax
#: NNX's stateful form, the one Flax's own MNIST example writes (`--api nnx-jit`): one `nnx.jit` call per step,
#: compiled with XLA's default options. (`--api nnx-split` computes Linen's very steps with Linen's options and
#: calls: tests/test_nnx.py.)
TRAINERS = {
    "jax": ("mnist_jax.train", []),
    "jax_nnx_jit": ("mnist_jax.train", ["--api", "nnx-jit"]),
    "torch_eager": ("mnist_torch.train", ["--mode", "eager"]),
    "torch_cudagraph": ("mnist_torch.train", ["--mode", "cuda-graphs"]),
    "torch_compile": ("mnist_torch.train", ["--mode", "compile"]),
    "torch_compile_step": ("mnist_torch.train", ["--mode", "compile-step"]),
}
#: The columns: the trainers as they ship (deterministic), and each framework's fastest settings.
SETTINGS = {"shipped": [], "fastest": ["--nondeterministic"]}
TARGET = 0.99
DEFAULT_SEEDS = {"cuda": 10, "cpu": 3}
#: A dry run: two seeds as shipped (the interleaving and the summaries over seeds), one at the fastest settings,
#: each one epoch evaluated on the first 1 000 test images (its figures prove the wiring, not the accuracy).
SMOKE_SEEDS = {"shipped": 2, "fastest": 1}
SMOKE_FLAGS = ["--epochs", "1", "--train-size", "1280", "--test-size", "1000"]
RUN_TIMEOUT_S = 1800


def time_to_target(epochs: list[dict], target: float = TARGET) -> float | None:
    """Training seconds up to the end of the first epoch whose test accuracy reaches `target` (None: never)."""
    elapsed = 0.0
    for epoch in epochs:
        elapsed += epoch["seconds"]
        if epoch["test_accuracy"] >= target:
            return elapsed
    return None


def train_once(
    variant: str,
    seed: int,
    full: bool,
    device: str,
    precision_name: str,
    setting: str,
    out_dir: Path,
    smoke: bool,
    threads: int,
) -> dict:
    """One run of the real command in its own process; what metrics.json says of it."""
    module, mode_flags = TRAINERS[variant]
    argv = [
        sys.executable,
        "-m",
        module,
        *mode_flags,
        "--seed",
        str(seed),
        "--device",
        device,
        "--precision",
        precision_name,
        "--out-dir",
        str(out_dir),
        "--quiet",
        *SETTINGS[setting],
        *(SMOKE_FLAGS if smoke else []),
        *([] if full else ["--stop-at-accuracy", str(TARGET)]),
    ]
    # Compilation from empty caches on both sides: JAX's persistent cache is off for the whole session
    # (conftest.py), and PyTorch's on-disk Inductor and Triton caches are new for every run.
    cache_dir = out_dir.with_name(f"{out_dir.name}-caches")
    caches = {"TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"), "TRITON_CACHE_DIR": str(cache_dir / "triton")}
    env = {**os.environ, **thread_environment(threads), **caches, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=RUN_TIMEOUT_S)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv[2:])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    epochs = metrics["epochs"]
    return {
        "seed": seed,
        "full": full,
        "epochs_run": len(epochs),
        "curve": [e["test_accuracy"] for e in epochs],
        "epoch_seconds": [e["seconds"] for e in epochs],
        "time_to_99_s": time_to_target(epochs),
        "final_accuracy": metrics["test_accuracy"] if full else None,
        "compile_seconds": metrics["compile_seconds"],
        "stopped_at_accuracy": metrics.get("stopped_at_accuracy"),
    }


def summarize(runs: list[dict]) -> dict:
    """The figures the report shows for one trainer: over every seed, and over the full runs."""
    reached = [r["time_to_99_s"] for r in runs if r["time_to_99_s"] is not None]
    finals = [r["final_accuracy"] for r in runs if r["final_accuracy"] is not None]
    first_epochs = [
        next(i + 1 for i, a in enumerate(r["curve"]) if a >= TARGET) for r in runs if r["time_to_99_s"] is not None
    ]
    epoch_seconds = [s for r in runs for s in r["epoch_seconds"]]
    compiles = [r["compile_seconds"] for r in runs if r["compile_seconds"] is not None]
    return {
        "seeds_run": len(runs),
        "reached_99": len(reached),
        "time_to_99": mean_and_spread(reached),
        "first_epoch_at_99": mean_and_spread(first_epochs),
        "final_accuracy": mean_and_spread(finals),
        "seconds_per_epoch": mean_and_spread(epoch_seconds),
        "compile_seconds": mean_and_spread(compiles),
    }


def chosen_trainers(config: pytest.Config) -> list[str]:
    """--bench-trainers' trainers (all of TRAINERS by default), in TRAINERS' order; an unknown name fails the
    benchmark at once with one line (it would otherwise measure nothing, silently)."""
    option = config.getoption("bench_trainers")
    if option is None:
        return list(TRAINERS)
    names = [name.strip() for name in option.split(",") if name.strip()]
    if unknown := [name for name in names if name not in TRAINERS]:
        pytest.fail(
            f"--bench-trainers names {', '.join(unknown)}, not among the trainers {', '.join(TRAINERS)}; "
            "pass some of those, comma-separated",
            pytrace=False,
        )
    return [name for name in TRAINERS if name in names]


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("precision_name", ["float32", "bf16"])
def test_accuracy(benchmark, precision_name, setting, device, smoke, tmp_path, request):
    skip_precision_not_run_on(device, precision_name)
    if setting == "fastest" and device == "cpu" and not smoke:
        pytest.skip(
            "on the CPU the trainers' deterministic settings change no kernel (tests/test_stop_and_settings.py: "
            "the same weights, bit for bit, with and without --nondeterministic), so this column is the shipped one"
        )
    variants = [v for v in chosen_trainers(request.config) if v != "torch_cudagraph" or device == "cuda"]
    planned = SMOKE_SEEDS[setting] if smoke else request.config.getoption("bench_seeds") or DEFAULT_SEEDS[device]
    deadline = request.config.getoption("bench_deadline")
    threads = request.config.bench_threads
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    cycle_seconds: list[float] = []

    def run_all() -> None:
        for seed in range(planned):
            # A time budget (gpu_run.sh) ends the seeds early rather than the whole test: the rows say how many ran.
            if deadline is not None and seed > 0 and time.time() + max(cycle_seconds) > deadline:
                break
            start = time.perf_counter()
            for variant in variants if seed % 2 == 0 else variants[::-1]:
                out_dir = tmp_path / f"{variant}-{seed}"
                runs[variant].append(
                    train_once(variant, seed, seed == 0, device, precision_name, setting, out_dir, smoke, threads)
                )
            cycle_seconds.append(time.perf_counter() - start)

    benchmark.group = f"accuracy {device} {precision_name} {setting}"
    with LoadMeter() as meter:
        benchmark.pedantic(run_all, rounds=1, iterations=1)
    rows = [
        {
            "framework": v.split("_")[0],
            "variant": v,
            "mode": "accuracy",
            "device": device,
            "precision": precision_name,
            "setting": setting,
            "setting_flags": SETTINGS[setting],
            "batch_size": 128,
            "seeds_planned": planned,
            "runs": runs[v],
            **summarize(runs[v]),
            "original_accuracy": ORIGINAL_ACCURACY,
            **meter.record(),
        }
        for v in variants
    ]
    benchmark.extra_info.update(mode="accuracy", device=device, rows=rows, **environment(device))
    for v in variants:  # results, not timings: every planned run completed, the full one every epoch
        assert runs[v] and runs[v][0]["epochs_run"] == (1 if smoke else 10), runs[v][0]

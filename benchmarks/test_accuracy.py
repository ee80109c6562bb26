"""Accuracy and time to 99%: each trainer, as a user runs it, over several seeds, every seed counted.

Every run is the real command (`python -m mnist_jax.train [--api A]`, `python -m mnist_torch.train --mode M`) in
a fresh process, so that each framework's own settings act exactly as they ship: the trainers'
deterministic settings in the "shipped" column, and `--nondeterministic` (each framework's fastest: cuDNN
and XLA autotuning, atomics allowed) in the "fastest" column. Seeds run interleaved (seed 0 of every
trainer, then seed 1 in the reverse order, ...), and every seed trains every epoch: none is dropped, and
none stops early, so the mean accuracy after each epoch is over all of them. Every run compiles from empty
caches (JAX's persistent cache off, a new Inductor cache folder).

Time to accuracy as speed-run records count it: the mean test accuracy after each epoch over the seeds,
with its 95% t-interval; the target epoch is the first whose interval's lower end clears 99% (none within
the budget is said so). For that epoch, the wall time from the command's start (imports, data, compilation,
training, each epoch's evaluation and checkpoint: each epoch's line is timestamped as the command prints it)
and the training seconds alone, each a mean over the seeds with its interval. Also per seed: its curve,
epoch seconds, its own first epoch at 99%, and the final accuracy. The original project's 98.76% is
recorded beside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from benchmarks.conditions import REPO, LoadMeter, thread_environment
from benchmarks.conftest import environment, skip_precision_not_run_on
from benchmarks.stats import mean_and_spread, mean_interval
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
DEFAULT_SEEDS = {"cuda": 10, "cpu": 5}
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
    device: str,
    precision_name: str,
    setting: str,
    out_dir: Path,
    smoke: bool,
    threads: int,
) -> dict:
    """One run of the real command in its own process, every epoch: what metrics.json says of it, and when
    (seconds from the launch) the command printed each epoch's line."""
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
        *SETTINGS[setting],
        *(SMOKE_FLAGS if smoke else []),
    ]
    # Compilation from empty caches on both sides: JAX's persistent cache is off for the whole session
    # (conftest.py), and PyTorch's on-disk Inductor and Triton caches are new for every run.
    cache_dir = out_dir.with_name(f"{out_dir.name}-caches")
    caches = {"TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"), "TRITON_CACHE_DIR": str(cache_dir / "triton")}
    env = {**os.environ, **thread_environment(threads), **caches, "PYTHONPATH": str(REPO)}
    epoch_lines: list[float] = []
    with tempfile.TemporaryFile("w+") as stderr:
        launch = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=REPO)
        watchdog = threading.Timer(RUN_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            for line in process.stdout:  # each epoch's line, as the user sees it come (a pipe: no progress bar)
                if line.startswith("epoch "):
                    epoch_lines.append(time.perf_counter() - launch)
            returncode = process.wait()
            wall = time.perf_counter() - launch
        finally:
            watchdog.cancel()
        stderr.seek(0)
        if returncode != 0:
            raise AssertionError(f"{' '.join(argv[2:])} failed ({returncode}): {stderr.read().strip()[-2000:]}")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert len(epoch_lines) == len(epochs), (epoch_lines, len(epochs))  # one printed line per recorded epoch
    return {
        "seed": seed,
        "epochs_run": len(epochs),
        "curve": [e["test_accuracy"] for e in epochs],
        "epoch_seconds": [e["seconds"] for e in epochs],
        "epoch_wall_s": epoch_lines,
        "wall_s": wall,
        "time_to_99_s": time_to_target(epochs),
        "final_accuracy": metrics["test_accuracy"],
        "compile_seconds": metrics["compile_seconds"],
    }


def target_epoch(per_epoch: list[dict], target: float = TARGET) -> int | None:
    """The first epoch (from 1) whose mean accuracy's 95% interval lies at or above `target`; None: none does."""
    return next((e for e, m in enumerate(per_epoch, 1) if m["low"] is not None and m["low"] >= target), None)


def summarize(runs: list[dict]) -> dict:
    """The figures the report shows for one trainer, over every seed (each trains every epoch)."""
    reached = [r["time_to_99_s"] for r in runs if r["time_to_99_s"] is not None]
    first_epochs = [
        next(i + 1 for i, a in enumerate(r["curve"]) if a >= TARGET) for r in runs if r["time_to_99_s"] is not None
    ]
    epochs = min(r["epochs_run"] for r in runs)
    per_epoch = [mean_interval([r["curve"][e] for r in runs]) for e in range(epochs)]
    target = target_epoch(per_epoch)
    at_target = target is not None
    return {
        "seeds_run": len(runs),
        "reached_99": len(reached),
        "time_to_99": mean_and_spread(reached),
        "first_epoch_at_99": mean_and_spread(first_epochs),
        "epoch_accuracy": per_epoch,
        "target_epoch": target,
        "wall_to_target_s": mean_interval([r["epoch_wall_s"][target - 1] for r in runs]) if at_target else None,
        "train_to_target_s": mean_interval([sum(r["epoch_seconds"][:target]) for r in runs]) if at_target else None,
        "final_accuracy": mean_and_spread([r["final_accuracy"] for r in runs]),
        "seconds_per_epoch": mean_and_spread([s for r in runs for s in r["epoch_seconds"]]),
        "compile_seconds": mean_and_spread([r["compile_seconds"] for r in runs if r["compile_seconds"] is not None]),
        "wall_s": mean_interval([r["wall_s"] for r in runs]),
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
                    train_once(variant, seed, device, precision_name, setting, out_dir, smoke, threads)
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
    for v in variants:  # results, not timings: every run completed every epoch
        assert runs[v] and all(r["epochs_run"] == (1 if smoke else 10) for r in runs[v]), runs[v]

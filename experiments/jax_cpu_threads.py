"""Question: does JAX's CPU trainer train faster with one intra-op thread, as PyTorch was tried (0.54x there)?

Date: 2026-12-03. Answer: benchmarks/RESULTS.md, "Tuning ledger" (JAX, threads), from this tool's JSON,
experiments/results/jax_cpu_threads.json.

Each setting is its own trainer process:
`python -m mnist_jax.train --epochs 2 --train-size 12800` (100 steps an epoch, the CPU trainer's 16-step calls),
alternating the two settings (order reversed every other pair); the figure is epoch 2's images/s (epoch 1 holds the
first calls' warm-up), paired by pair.

    python -m experiments.jax_cpu_threads --pairs 6 --out experiments/results/jax_cpu_threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.conditions import LoadMeter, load_warning
from benchmarks.conftest import environment
from benchmarks.stats import paired_speed_ratio, rate_summary

#: setting: the command's prefix. jaxlib 0.10's XLA:CPU takes no thread count that acts: with
#: XLA_FLAGS=--xla_cpu_multi_thread_eigen=false a process still kept 1.5 cores busy, as without it, at the same
#: speed. So one thread is tried as one core (`taskset -c 0`), which XLA:CPU sizes its thread pool by.
SETTINGS = {"default": [], "threads1": ["taskset", "-c", "0"]}
FLAGS = ["--epochs", "2", "--train-size", "12800", "--quiet"]


def epoch_two_seconds(prefix: list[str], out_dir: Path) -> tuple[float, float]:
    """Epoch 2's training seconds, and the CPU seconds per wall second of the whole process (about 1 on one thread,
    up to the number of cores on all): whether the setting took effect."""
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    argv = [*prefix, sys.executable, "-m", "mnist_jax.train", *FLAGS, "--out-dir", str(out_dir)]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return json.loads((out_dir / "metrics.json").read_text())["epochs"][1]["seconds"], cpu / wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    warning = load_warning()
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    cores_used: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as work, LoadMeter() as whole:
        for pair in range(args.pairs):
            for name in list(SETTINGS) if pair % 2 == 0 else list(SETTINGS)[::-1]:
                epoch, cores = epoch_two_seconds(SETTINGS[name], Path(work) / f"{name}-{pair}")
                seconds[name].append(epoch)
                cores_used[name].append(cores)
                print(f"pair {pair}, {name}: {epoch:.2f} s, {cores:.2f} cores busy", flush=True)
    images = 12800
    record = {
        "question": __doc__.splitlines()[0],
        "flags": FLAGS,
        "prefixes": SETTINGS,
        "rows": [
            {
                "setting": name,
                "epoch_2_seconds": seconds[name],
                "cores_busy_per_process": cores_used[name],
                "images_per_s": rate_summary(seconds[name], images),
                "speed_vs_default": paired_speed_ratio(seconds[name], seconds["default"]),
            }
            for name in SETTINGS
        ],
        "load_warning": warning,
        **whole.record(),
        **environment("cpu"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for row in record["rows"]:
        r = row["speed_vs_default"]
        print(
            f"{row['setting']}: {row['images_per_s']['median']:.0f} img/s, {r['ratio']:.3f}x [{r['low']}-{r['high']}]"
        )


if __name__ == "__main__":
    main()

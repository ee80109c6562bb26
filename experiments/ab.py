"""Question: is one training-step variant within a few percent of another, closer than the suite's intervals
resolve? First asked of Flax NNX's functional route against Linen at batch 128 (within 2%?).

Date: 2026-11-30. Answer: yes: `jax_nnx_split` 0.994x [0.983-1.008] of `jax_jit` over 100 paired rounds,
`jax_nnx_fused` 0.992x [0.974-1.011] of `jax_scan_unrolled` over 80 (2-core AMD EPYC; benchmarks/RESULTS.md,
"Flax NNX"; benchmarks/results/ab-cpu-2core-nnx-*.json). Kept as the tool for the next such question.

The suite's throughput benchmark (`benchmarks/test_throughput.py`) times every variant at once, ten to forty rounds
each; this runs only the variants named, in the suite's interleaved schedule (order reversed every other cycle),
with the suite's rounds (`benchmarks.runners`): the same batches, compilation and warm-up. Writes a JSON with every
round and prints the paired speed of each variant against the first, with its 95% interval
(`benchmarks.stats.paired_speed_ratio`).

    python -m experiments.ab jax_jit jax_nnx_split --batch-size 128 --rounds 60 --out ab.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import conditions
from benchmarks.conditions import LoadMeter
from benchmarks.conftest import environment
from benchmarks.runners import TRAIN_VARIANTS, autotuned, build_round, precision
from benchmarks.stats import MIN_VALUES_FOR_INTERVAL, interleaved_schedule, paired_speed_ratio, rate_summary
from mnist_jax.data import load_mnist as load_jax_mnist
from mnist_torch.data import load_mnist


def run(variants: list[str], batch_size: int, rounds: int, device: str, smoke: bool = False) -> dict:
    """Every variant built as the suite builds it, then `rounds` timed rounds each, interleaved."""
    mnist = load_mnist()
    jax_mnist = load_jax_mnist()
    seconds: dict[str, list[float | None]] = {v: [None] * rounds for v in variants}
    with precision("float32"), autotuned(device):  # as the suite's comparisons run
        built = {v: build_round(v, "train", device, batch_size, "float32", mnist, jax_mnist, smoke) for v in variants}
        with LoadMeter() as whole:
            for cycle, variant in interleaved_schedule(dict.fromkeys(variants, rounds)):
                start = time.perf_counter()
                built[variant].run()
                seconds[variant][cycle] = time.perf_counter() - start
    first = variants[0]
    return {
        "batch_size": batch_size,
        "device": device,
        "precision": "float32",
        "images_per_round": built[first].images,
        "rows": [
            {
                "variant": v,
                "round_seconds": seconds[v],
                "images_per_s": rate_summary([s for s in seconds[v] if s is not None], built[v].images),
                "compile_seconds": built[v].compile_seconds,
                f"speed_vs_{first}": paired_speed_ratio(seconds[v], seconds[first]),
            }
            for v in variants
        ],
        **whole.record(),
        **environment(device),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m experiments.ab", description=__doc__.splitlines()[0]
    )
    parser.add_argument("variants", nargs="+", choices=TRAIN_VARIANTS, help="the first is the baseline")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds of each variant, at least 5")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--smoke", action="store_true", help="two steps per round, from any tree: checks the tool, times nothing"
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument(
        "--bench-allow-dirty", action="store_true", help="run from a tree that differs from its commit (marked dirty)"
    )
    args = parser.parse_args(argv)
    if len(args.variants) < 2 or args.rounds < MIN_VALUES_FOR_INTERVAL:
        parser.error(
            f"an A/B needs two variants or more and {MIN_VALUES_FOR_INTERVAL} rounds or more (an interval needs "
            f"them); got {len(args.variants)} variants and --rounds {args.rounds}"
        )
    refusal = conditions.dirty_refusal(conditions.provenance())
    if refusal and not (args.bench_allow_dirty or args.smoke):  # as the suite: results traced to a commit
        parser.exit(2, refusal + "\n")
    warning = None if args.smoke else conditions.load_warning()  # as the suite's header: a busy machine is said
    if warning:
        print(warning, file=sys.stderr, flush=True)
    result = {**run(args.variants, args.batch_size, args.rounds, args.device, args.smoke), "load_warning": warning}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    first = args.variants[0]
    for row in result["rows"][1:]:
        ratio = row[f"speed_vs_{first}"]
        interval = "no interval" if ratio["low"] is None else f"[{ratio['low']:.3f}-{ratio['high']:.3f}]"
        print(
            f"{row['variant']} vs {first}, batch {args.batch_size}, {args.device}: "
            f"{ratio['ratio']:.3f}x {interval} over {ratio['pairs']} paired rounds"
        )


if __name__ == "__main__":
    main()

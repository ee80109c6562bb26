"""Peak device memory of each throughput variant, measured the same way for both frameworks.

Each variant runs in its own fresh process (``python -m benchmarks.memory VARIANT MODE --device cuda
--batch-size B --precision P [--smoke]``, one JSON line on stdout), which builds the variant's round
exactly as the throughput suite does (`runners.torch_round`, `runners.jax_round`, for
`runners.images_per_round` images), runs it twice, and reports its allocator's peak since the process
started: ``torch.cuda.max_memory_allocated()`` for PyTorch, ``device.memory_stats()["peak_bytes_in_use"]``
for JAX, with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that JAX allocates what it uses instead of
reserving most of the GPU up front. Both figures count what the round holds on the device (its batches,
or the resident training set it gathers from), the model, the optimizer state and the temporaries of
the steps, and whatever compilation or autotuning allocated through the same allocator; neither counts
the CUDA context or the libraries' code. A fresh process per variant is what makes the JAX figure a
per-variant one: its allocator's peak cannot be reset.

On the CPU neither allocator keeps such a peak (``memory_stats()`` is None on XLA:CPU, and the process's
resident set is dominated by the data set and both libraries), so the process reports None and why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.conditions import PROCESS_TIMEOUT_S, run_json_process

MEASURES = {
    "jax": "jax: device.memory_stats() peak_bytes_in_use, own process",
    "torch": "torch: torch.cuda.max_memory_allocated, own process",
}
CPU_NOTE = (
    "on the CPU there is no allocator peak that tells variants apart "
    "(process RSS is dominated by the data set and both libraries)"
)
CUDA_NOTE = (
    "peak since the process started: the round's data on the device, model, optimizer state, the steps' "
    "temporaries and any compilation or autotuning scratch, over building the round and running it twice"
    "; JAX without preallocation (XLA_PYTHON_CLIENT_PREALLOCATE=false)"
)


def run_process(
    variant: str,
    mode: str,
    device: str,
    batch_size: int,
    precision_name: str,
    smoke: bool,
    timeout: float = PROCESS_TIMEOUT_S,
) -> dict[str, Any]:
    """One fresh measuring process; its JSON result, or conditions.ProcessError with its stderr's last lines.
    JAX without preallocation, so that its allocator's peak is what the variant used, not a pool."""
    args = [
        "benchmarks.memory",
        variant,
        mode,
        "--device",
        device,
        "--batch-size",
        str(batch_size),
        "--precision",
        precision_name,
    ]
    return run_json_process(args + (["--smoke"] if smoke else []), {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, timeout)


def _measure(variant: str, mode: str, device: str, batch_size: int, precision_name: str, smoke: bool) -> dict[str, Any]:
    from benchmarks import runners
    from mnist_jax import data as jax_data
    from mnist_torch import data as torch_data

    variants = runners.EVAL_VARIANTS if mode == "eval" else runners.MEMORY_TRAIN_VARIANTS
    if variant not in variants:
        sys.exit(f"error: {variant!r} is not a {mode} variant of benchmarks/runners.py: {', '.join(variants)}")
    framework = variant.split("_")[0]
    mnist = torch_data.load_mnist()
    with runners.precision(precision_name):
        images = runners.images_per_round(mode, device, batch_size, smoke)
        if framework == "torch":
            round_ = runners.torch_round(variant, mode, mnist, device, batch_size, images, precision_name)
        else:
            split = jax_data.from_torch(mnist.test if mode == "eval" else mnist.train)
            round_ = runners.jax_round(variant, mode, split, device, batch_size, images, mnist, precision_name)
        round_.run()
        round_.run()
    if device == "cpu":
        peak, note = None, CPU_NOTE
    elif framework == "torch":
        import torch

        peak, note = int(torch.cuda.max_memory_allocated()), CUDA_NOTE
    else:
        stats = runners.jax_device(device).memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        note = CUDA_NOTE if peak is not None else "this JAX backend's memory_stats() reports no peak_bytes_in_use"
        peak = None if peak is None else int(peak)
    return {
        "peak_memory_bytes": peak,
        "memory_measure": MEASURES[framework],
        "memory_note": note,
        "images_per_round": round_.images,
        "steps_per_round": round_.steps,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("variant")
    parser.add_argument("mode", choices=("train", "eval"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="float32", choices=("float32", "tf32", "bf16"))
    parser.add_argument("--smoke", action="store_true", help="the dry run's round: two batches")
    args = parser.parse_args(argv)
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # before JAX starts its GPU client: what is used, not a pool
    result = _measure(args.variant, args.mode, args.device, args.batch_size, args.precision, args.smoke)
    result.update(
        variant=args.variant,
        measured_mode=args.mode,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        smoke=args.smoke,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

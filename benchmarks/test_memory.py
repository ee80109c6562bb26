"""Peak device memory of every throughput variant, one method for both frameworks (`benchmarks/memory.py`).

Run: pytest benchmarks --benchmark-only -k memory [--benchmark-json results.json]
Each variant of `runners.MEMORY_TRAIN_VARIANTS` (mode train; not the NNX rows, which hold Linen's arrays) and
`runners.EVAL_VARIANTS` (mode eval), at batch 128 and 1024, float32 (TF32 changes the arithmetic, not the
memory), runs in its own fresh process that builds the throughput suite's round, runs it twice and reports its
allocator's peak: ``torch.cuda.max_memory_allocated()``, or JAX's ``peak_bytes_in_use`` without preallocation.
The figure is ``peak_memory_bytes``; the timing of the whole measurement (one round) means little.

On the CPU no allocator peak tells the variants apart, so a full run skips every CPU test with that
reason, and a dry run (--bench-dry-run) still runs the process, on the smoke round (two batches),
for the machinery's sake, on one variant per framework (train, batch 128), and records
``peak_memory_bytes: None`` with the reason in ``memory_note``.
"""

from __future__ import annotations

import pytest

from benchmarks import memory
from benchmarks.conditions import ProcessError
from benchmarks.conftest import environment
from benchmarks.runners import EVAL_VARIANTS, MEMORY_TRAIN_VARIANTS

PRECISION = "float32"
DRY_RUN_VARIANTS = ("torch_eager", "jax_jit")
CASES = [pytest.param(variant, "train", id=f"train-{variant}") for variant in MEMORY_TRAIN_VARIANTS] + [
    pytest.param(variant, "eval", id=f"eval-{variant}") for variant in EVAL_VARIANTS
]


@pytest.mark.parametrize("batch_size", [128, 1024])
@pytest.mark.parametrize("variant,measured_mode", CASES)
def test_memory(benchmark, variant, measured_mode, batch_size, device, smoke):
    if variant == "torch_cudagraph" and device != "cuda":
        pytest.skip("CUDA graphs exist on NVIDIA GPUs only (`python -m mnist_torch.train --mode cuda-graphs`)")
    if device == "cpu" and not smoke:
        pytest.skip(memory.CPU_NOTE)
    if device == "cpu" and (variant not in DRY_RUN_VARIANTS or measured_mode != "train" or batch_size != 128):
        pytest.skip(
            "the CPU's dry run checks the measuring process on one variant per framework (train, batch 128): "
            "a CPU figure would mean nothing, and each process costs seconds of start-up"
        )
    framework = variant.split("_")[0]
    results = {}

    def measure() -> None:
        results["process"] = memory.run_process(variant, measured_mode, device, batch_size, PRECISION, smoke)

    benchmark.group = f"memory {measured_mode} {device} batch {batch_size} {PRECISION}"
    try:
        benchmark.pedantic(measure, rounds=1, iterations=1)
    except ProcessError as err:
        pytest.fail(str(err), pytrace=False)
    process = results["process"]
    benchmark.extra_info.update(
        framework=framework,
        variant=variant,
        mode="memory",
        measured_mode=measured_mode,
        device=device,
        batch_size=batch_size,
        precision=PRECISION,
        peak_memory_bytes=process["peak_memory_bytes"],
        memory_measure=process["memory_measure"],
        memory_note=process["memory_note"],
        **environment(device),
    )
    assert (
        process["variant"] == variant
        and process["measured_mode"] == measured_mode
        and process["batch_size"] == batch_size
    )
    assert process["memory_measure"] == memory.MEASURES[framework]
    if device == "cpu":
        assert process["peak_memory_bytes"] is None and process["memory_note"] == memory.CPU_NOTE
    else:
        peak = process["peak_memory_bytes"]
        assert isinstance(peak, int) and peak > 0, process

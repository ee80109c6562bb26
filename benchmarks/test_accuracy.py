"""Accuracy: both frameworks trained with the default config on real MNIST, in full float32 (and bf16 on a GPU).

Records, in extra_info: the final test accuracy, the training seconds (epochs alone; the timed
round itself also holds data loading, compilation and evaluation), the time to 99% (training
seconds up to the end of the first epoch that reaches 99% test accuracy), and the per-epoch curve.
The original project's 98.76% is recorded beside them.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.conftest import environment, skip_precision_not_run_on
from benchmarks.runners import precision
from mnist_jax import train as jax_train
from mnist_torch import train as torch_train
from mnist_torch.config import TrainConfig
from mnist_torch.report import ORIGINAL_ACCURACY, EpochRecord

#: Each framework's trainer in each of its execution modes: (trainer module, --mode); torch_compile,
#: the slowest to start, last.
TRAINERS = {
    "jax": (jax_train, None),
    "torch_eager": (torch_train, "eager"),
    "torch_cudagraph": (torch_train, "cuda-graphs"),
    "torch_compile": (torch_train, "compile"),
}
TARGET = 0.99


def time_to_target(records: list[EpochRecord], target: float = TARGET) -> float | None:
    elapsed = 0.0
    for record in records:
        elapsed += record.seconds
        if record.test_accuracy >= target:
            return elapsed
    return None


@pytest.mark.parametrize("precision_name", ["float32", "bf16"])
@pytest.mark.parametrize("variant", list(TRAINERS))
def test_accuracy(benchmark, variant, precision_name, device, smoke, tmp_path):
    skip_precision_not_run_on(device, precision_name)
    if variant == "torch_cudagraph" and device != "cuda":
        pytest.skip("CUDA graphs exist on NVIDIA GPUs only (`python -m mnist_torch.train --mode cuda-graphs`)")
    trainer, mode = TRAINERS[variant]
    smoke_limits = {"epochs": 1, "train_size": 2560} if smoke else {}
    config = TrainConfig(device=device, precision=precision_name, out_dir=tmp_path, quiet=True, mode=mode, **smoke_limits)
    benchmark.group = f"accuracy {device}"
    with precision(precision_name):
        records = benchmark.pedantic(trainer.train, args=(config,), rounds=1, iterations=1)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    benchmark.extra_info.update(
        framework=variant.split("_")[0], variant=variant, mode="accuracy", device=device, precision=precision_name,
        batch_size=config.batch_size, epochs=config.epochs, test_accuracy=records[-1].test_accuracy,
        train_seconds=sum(r.seconds for r in records), seconds_per_epoch=sum(r.seconds for r in records) / len(records),
        time_to_99_s=time_to_target(records),
        compile_seconds=metrics["compile_seconds"], original_accuracy=ORIGINAL_ACCURACY,
        curve=[r.test_accuracy for r in records], **environment(device),
    )
    assert len(records) == config.epochs  # a result, not a timing: the run completed every epoch

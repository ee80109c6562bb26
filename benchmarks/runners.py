"""The timed work of each benchmark variant, built the same way for both frameworks.

A *round* is the unit pytest-benchmark times: a fixed number of images (the same for every
variant at a given batch size), on batches already resident on the device, ending only once
the device has finished (`jax.block_until_ready`, `torch.cuda.synchronize`). Building a round
compiles and warms it up; those seconds are returned apart, never timed with the rounds.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import jax
import numpy as np
import torch

from mnist_jax import train as jax_train
from mnist_jax.data import Split as JaxSplit
from mnist_torch import train as torch_train
from mnist_torch.config import TrainConfig
from mnist_torch.data import MNISTData, batch_indices

TRAIN_VARIANTS = ("torch_eager", "torch_compile", "jax_jit", "jax_scan", "jax_scan_unrolled")
EVAL_VARIANTS = ("torch_eager", "torch_compile", "jax_jit")
TRAIN_IMAGES_PER_ROUND = 2048  # 16 steps at batch 128, 2 at batch 1024
EVAL_IMAGES_PER_ROUND = 8192

#: bf16 rows (mixed precision, --precision bf16 of the trainers) run where bfloat16 has fast hardware paths,
#: the GPU; on the CPU the trainers' bf16 epochs are recorded in benchmarks/RESULTS.md instead, which
#: keeps the suite within its 15 minutes.
BF16_DEVICES = ("cuda",)


@dataclass
class Round:
    run: Callable[[], None]
    compile_seconds: float | None  # tracing and compilation (None: eager, nothing compiled)
    warmup_seconds: float  # the untimed first call(s): allocation, autotuning, lazy initialization
    last_untimed_seconds: float  # the last untimed call, already warm: sizes the number of timed rounds
    images: int
    steps: int


@contextlib.contextmanager
def precision(name: str) -> Iterator[None]:
    """One precision for both frameworks: "float32" is full float32 matmuls and convolutions; "tf32"
    lets both use TF32 on NVIDIA GPUs. Unequal defaults (JAX: TF32, PyTorch matmuls: full) would make
    an unfair race. JAX reads it at trace time, PyTorch at run time, so rounds run inside it too.
    "bf16" computes the layers in bfloat16 (`train_config`); what stays float32 is full float32."""
    allow = name == "tf32"
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        with jax.default_matmul_precision("tensorfloat32" if allow else "float32"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def train_config(precision_name: str) -> TrainConfig:
    """The default hyperparameters, with the trainers' compute precision for a bf16 row."""
    return TrainConfig(precision="bf16" if precision_name == "bf16" else "float32")


def gpu_present() -> bool:
    return torch.cuda.is_available() and any(d.platform == "gpu" for d in jax.devices())


def jax_device(device: str) -> jax.Device:
    return jax.devices("gpu" if device == "cuda" else "cpu")[0]


def images_per_round(mode: str, batch_size: int, smoke: bool) -> int:
    """The same for every variant at one batch size; two steps' worth in smoke mode."""
    if smoke:
        return 2 * batch_size
    return EVAL_IMAGES_PER_ROUND if mode == "eval" else TRAIN_IMAGES_PER_ROUND


def round_batches(data: MNISTData, batch_size: int, images: int, test: bool) -> np.ndarray:
    """Indices (steps, batch) of the round's images: the trainers' batch order for training, test images in order for eval."""
    steps = images // batch_size
    if test:
        return np.arange(steps * batch_size).reshape(steps, batch_size) % len(data.test.labels)
    return np.stack(list(batch_indices(0, 1, len(data.train.labels), batch_size))[:steps])


def _timed_warmup(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def torch_round(variant: str, mode: str, data: MNISTData, device: str, batch_size: int, images: int, precision_name: str) -> Round:
    dev = torch.device(device)
    split = data.test if mode == "eval" else data.train
    idx = round_batches(data, batch_size, images, mode == "eval")
    batches = [(split.images[i].to(dev), split.labels[i].to(dev)) for i in torch.from_numpy(idx)]
    state = torch_train.create_state(0, train_config(precision_name), dev)
    if variant == "torch_compile":
        state = state._replace(model=torch.compile(state.model))
    model = state.model
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    if mode == "train":

        def run() -> None:
            for batch in batches:
                torch_train.train_step(state, batch)
            sync()
    else:
        model.eval()

        def run() -> None:
            for batch in batches:
                torch_train.eval_step(model, batch)
            sync()

    # torch.compile compiles lazily, on the first call, and may specialize again on the second:
    # both calls are its compile time. Eager's two calls are its warm-up.
    first, second = _timed_warmup(run), _timed_warmup(run)
    if variant == "torch_compile":
        return Round(run, first + second, 0.0, second, idx.size, len(idx))
    return Round(run, None, first + second, second, idx.size, len(idx))


def jax_round(
    variant: str, mode: str, data: JaxSplit, device: str, batch_size: int, images: int, mnist: MNISTData, precision_name: str
) -> Round:
    """`data` is the JAX view of the split the mode uses; `mnist` only supplies the batch order."""
    dev = jax_device(device)
    idx = round_batches(mnist, batch_size, images, mode == "eval")
    images, labels = jax.device_put((data.images[idx], data.labels[idx]), dev)  # (steps, batch, ...)
    state = jax.device_put(jax_train.create_state(0, train_config(precision_name)), dev)
    holder = {"state": state}

    if mode == "eval":
        params = state.params
        step_batches = [(images[i], labels[i]) for i in range(len(idx))]
        start = time.perf_counter()
        step = jax_train.eval_step.lower(params, step_batches[0]).compile()

        def run() -> None:
            jax.block_until_ready([step(params, b) for b in step_batches])
    elif variant == "jax_jit":
        step_batches = [(images[i], labels[i]) for i in range(len(idx))]
        start = time.perf_counter()
        step = jax_train.train_step.lower(state, step_batches[0]).compile()

        def run() -> None:
            s = holder["state"]
            for b in step_batches:
                s, _ = step(s, b)
            holder["state"] = jax.block_until_ready(s)
    else:
        unroll = variant == "jax_scan_unrolled"
        start = time.perf_counter()
        steps = jax_train.train_steps.lower(state, (images, labels), unroll=unroll).compile()

        def run() -> None:
            s, _ = steps(holder["state"], (images, labels))
            holder["state"] = jax.block_until_ready(s)

    compile_seconds = time.perf_counter() - start
    warmup = _timed_warmup(run)  # compiled ahead of time: the first call is already a representative round
    return Round(run, compile_seconds, warmup, warmup, idx.size, len(idx))

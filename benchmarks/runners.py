"""The timed work of each benchmark variant, built the same way for both frameworks.

A *round* is the unit pytest-benchmark times: a fixed number of images (the same for every
variant at a given batch size), on batches already resident on the device, ending only once
the device has finished (`jax.block_until_ready`, `torch.cuda.synchronize`). Building a round
compiles and warms it up; those seconds are returned apart, never timed with the rounds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jax
import numpy as np
import torch
from flax import nnx

from mnist_common.batches import batch_order
from mnist_common.config import TrainConfig
from mnist_jax import steps as jax_steps
from mnist_jax import steps_nnx
from mnist_jax import tuned as jax_tuned
from mnist_jax.data import MNISTData as JaxMNISTData
from mnist_jax.data import Split as JaxSplit
from mnist_jax.parallel import make_mesh, place, replicated
from mnist_torch import steps as torch_steps
from mnist_torch import train as torch_train
from mnist_torch import tuned as torch_tuned
from mnist_torch.data import MNISTData
from mnist_torch.parallel import World

#: torch_compile_step: the trainer's `--mode compile-step` (the whole step as one torch.compile(fullgraph=True) graph);
#: torch_cudagraph: the whole step replayed as a CUDA graph (`--mode cuda-graphs`, GPU only);
#: jax_scan_unrolled: the CPU trainer's path, FUSED_STEPS unrolled steps per call; jax_epoch: the GPU
#: trainer's path, a rolled scan over the batches gathered on the device from the resident set. On its own
#: platform each is the trainer's own compiled `Steps` (`jax_trainer_round`), on the other one built by hand.
#: jax_nnx_*: the same step written in Flax NNX (`mnist_jax.steps_nnx`), one call per step: jax_nnx_jit, `nnx.jit`
#: over the module and its optimizer (Flax's example); jax_nnx_tree, the same in NNX's tree mode (`graph=False`);
#: jax_nnx_split, `nnx.split` once and `jax.jit` over the state; jax_nnx_leaves, the same over the state's list
#: of arrays; and jax_nnx_fused, the functional route fused as the trainer's path fuses Linen's (FUSED_STEPS
#: unrolled on the CPU, the round as one rolled scan on a GPU).
#: Listed in the order they run: torch_compile, the slowest to compile, last, so that a time budget
#: (benchmarks/gpu_run.sh) cuts it first.
TRAIN_VARIANTS = (
    "torch_eager",
    "torch_compile_step",
    "torch_cudagraph",
    "jax_epoch",
    "jax_jit",
    "jax_scan_unrolled",
    "jax_nnx_jit",
    "jax_nnx_tree",
    "jax_nnx_split",
    "jax_nnx_leaves",
    "jax_nnx_fused",
    "jax_scan",
    "torch_compile",
)
#: The NNX rows, which the memory benchmark leaves out (their buffers are Linen's: the same arrays).
NNX_VARIANTS = ("jax_nnx_jit", "jax_nnx_tree", "jax_nnx_split", "jax_nnx_leaves", "jax_nnx_fused")
MEMORY_TRAIN_VARIANTS = tuple(v for v in TRAIN_VARIANTS if v not in NNX_VARIANTS)
EVAL_VARIANTS = ("torch_eager", "jax_jit", "torch_compile")
#: Images per timed round. CPU training: 16 steps at batch 128, and at least FUSED_STEPS steps at any batch
#: size (`images_per_round`). A GPU runs a step in well under a millisecond, so its rounds are 8x longer, to keep
#: timer and launch noise small; the JAX trainer's path there runs a whole epoch per call, so its round is one
#: epoch (`jax_trainer_round`).
TRAIN_IMAGES_PER_ROUND = {"cpu": 2048, "cuda": 16384}
EVAL_IMAGES_PER_ROUND = {"cpu": 8192, "cuda": 32768}

#: bf16 rows (mixed precision, --precision bf16 of the trainers) run where bfloat16 has fast hardware paths,
#: the GPU; on the CPU the trainers' bf16 epochs are recorded in benchmarks/RESULTS.md instead, which
#: keeps the suite within its 15 minutes.
BF16_DEVICES = ("cuda",)


#: Untimed rounds every variant runs after its compilation (or capture), before the timed ones: the same
#: number on both sides, so that allocation, autotuning and lazy initialization are out of every timing.
WARMUP_ROUNDS = 2


@dataclass
class Round:
    run: Callable[[], None]
    compile_seconds: float | None  # tracing and compilation, or CUDA-graph capture (None: eager, nothing compiled)
    warmup_seconds: list[float]  # the WARMUP_ROUNDS untimed rounds after compilation
    images: int
    steps: int

    @property
    def last_untimed_seconds(self) -> float:
        """The last warm-up round, already warm: sizes the number of timed rounds."""
        return self.warmup_seconds[-1]


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


@contextlib.contextmanager
def autotuned(device: str) -> Iterator[None]:
    """Both frameworks at their fastest kernels: on a GPU, cuDNN picks convolution algorithms by timing them
    (`cudnn.benchmark`), as XLA's autotuner does by default; the CPU has no autotuning on either side."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


#: What `autotuned` and the suite's process leave each framework, stated beside every throughput table.
SETTINGS = {
    "cuda": "both autotuned (cuDNN benchmark mode on; XLA's GPU autotuner at its default level) and non-deterministic "
    "(neither trainer's deterministic settings apply in the suite)",
    "cpu": "no autotuning on either side (XLA:CPU and PyTorch's CPU kernels choose no kernel by timing; torch.compile "
    "in its default mode); both deterministic on the CPU",
}


def train_config(precision_name: str) -> TrainConfig:
    """The default hyperparameters, with the trainers' compute precision for a bf16 row."""
    return TrainConfig(precision="bf16" if precision_name == "bf16" else "float32")


def gpu_present() -> bool:
    return torch.cuda.is_available() and any(d.platform == "gpu" for d in jax.devices())


def jax_device(device: str) -> jax.Device:
    return jax.devices("gpu" if device == "cuda" else "cpu")[0]


def images_per_round(mode: str, device: str, batch_size: int, smoke: bool) -> int:
    """The same for every variant at one batch size and device; two steps' worth in smoke mode. CPU training
    rounds hold at least FUSED_STEPS steps: the JAX trainer fuses that many per call, and a shorter round
    would time only the one-step calls it makes for an epoch's last few batches."""
    if smoke:
        return 2 * batch_size
    if mode == "eval":
        return EVAL_IMAGES_PER_ROUND[device]
    if device == "cpu":
        return max(TRAIN_IMAGES_PER_ROUND[device], jax_tuned.FUSED_STEPS * batch_size)
    return TRAIN_IMAGES_PER_ROUND[device]


def round_batches(data: MNISTData, batch_size: int, images: int, test: bool) -> np.ndarray:
    """Indices (steps, batch) of the round's images: the trainers' batch order for training, test images in order
    for eval."""
    steps = images // batch_size
    if test:
        return np.arange(steps * batch_size).reshape(steps, batch_size) % len(data.test.labels)
    return batch_order(0, 1, len(data.train.labels), batch_size)[:steps]


def _timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _warm_up(run: Callable[[], None]) -> list[float]:
    return [_timed(run) for _ in range(WARMUP_ROUNDS)]


def torch_round(
    variant: str, mode: str, data: MNISTData, device: str, batch_size: int, images: int, precision_name: str
) -> Round:
    dev = torch.device(device)
    split = data.test if mode == "eval" else data.train
    idx = round_batches(data, batch_size, images, mode == "eval")
    state = torch_steps.create_state(0, train_config(precision_name), dev)
    model = state.model
    if variant == "torch_compile":
        state = state._replace(forward=torch.compile(state.model))
        model = state.forward
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    if variant == "torch_compile_step":
        # What `python -m mnist_torch.train --mode compile-step` runs: the trainer's own prepared step, gathering
        # each batch from the resident training set.
        config = dataclasses.replace(train_config(precision_name), mode="compile-step")
        state = torch_tuned.create_state(0, config, dev)
        train = torch_train.Split(data.train.images.to(dev), data.train.labels.to(dev))
        start = time.perf_counter()
        state, prepared, _ = torch_tuned.compile_steps(state, train, config, World())
        calls = prepared.calls(idx)

        def run() -> None:
            for rows in calls:
                prepared(state, rows)
            sync()

        run()  # torch.compile compiles on the first call (compile_steps made it on a real batch) and may again here
        return Round(run, time.perf_counter() - start, _warm_up(run), idx.size, len(idx))
    if variant == "torch_cudagraph":
        # The captured step gathers its batch from the resident training set, like the trainer's.
        train = torch_train.Split(data.train.images.to(dev), data.train.labels.to(dev))
        start = time.perf_counter()
        step = torch_tuned.CapturedStep(torch_steps.train_step, state, train, batch_size)
        capture_seconds = time.perf_counter() - start
        order = torch.from_numpy(idx).to(dev)

        def run() -> None:
            for i in order:
                step(i)
            sync()

        return Round(run, capture_seconds, _warm_up(run), idx.size, len(idx))
    # Only the variants that step through a list of batches hold one: the captured step gathers its own.
    batches = [(split.images[i].to(dev), split.labels[i].to(dev)) for i in torch.from_numpy(idx)]
    if mode == "train":

        def run() -> None:
            for batch in batches:
                torch_steps.train_step(state, batch)
            sync()
    else:
        model.eval()

        def run() -> None:
            for batch in batches:
                torch_steps.eval_step(model, batch)
            sync()

    # torch.compile compiles lazily, on the first call, and may specialize again on the second: both calls
    # are its compile time, and its warm-up rounds come after them, as every other variant's.
    compile_seconds = _timed(run) + _timed(run) if variant == "torch_compile" else None
    return Round(run, compile_seconds, _warm_up(run), idx.size, len(idx))


def steps_per_call(steps: int, fused: int) -> int:
    """Steps per call of a hand-built fused round: `fused`, or all of a shorter round; a round that does not
    divide into such calls is refused, since its leftover steps would go untimed while their images counted."""
    k = min(fused, steps)
    if steps % k:
        raise ValueError(
            f"jax_scan_unrolled: a round of {steps} steps does not divide into calls of {k} steps; "
            f"the leftover steps would go untimed while their images counted: use a multiple of {k}"
        )
    return k


def jax_round(
    variant: str,
    mode: str,
    data: JaxSplit,
    device: str,
    batch_size: int,
    images: int,
    mnist: MNISTData,
    precision_name: str,
) -> Round:
    """`data` is the JAX view of the split the mode uses; `mnist` only supplies the batch order."""
    dev = jax_device(device)
    idx = round_batches(mnist, batch_size, images, mode == "eval")
    images, labels = jax.device_put((data.images[idx], data.labels[idx]), dev)  # (steps, batch, ...)
    # jax_jit is the lesson as written (`mnist_jax.steps`: stock layers, `jax.jit`'s own compilation); the other
    # variants run the trainer's model and compiler options (`mnist_jax.tuned`).
    lesson = variant == "jax_jit" and mode == "train"
    create_state = jax_steps.create_state if lesson else jax_tuned.create_state
    state = jax.device_put(create_state(0, train_config(precision_name), dev), dev)
    holder = {"state": state}

    platform = dev.platform
    if mode == "train" and variant == JAX_TRAINER_PATH[platform]:
        return jax_trainer_round(data, dev, batch_size, precision_name, idx)
    if mode == "eval":
        params = state.params
        step_batches = [(images[i], labels[i]) for i in range(len(idx))]
        start = time.perf_counter()
        step = jax_steps.eval_step.lower(params, step_batches[0]).compile()

        def run() -> None:
            jax.block_until_ready([step(params, b) for b in step_batches])
    elif variant == "jax_jit":
        step_batches = [(images[i], labels[i]) for i in range(len(idx))]
        start = time.perf_counter()
        step = jax_steps.train_step.lower(state, step_batches[0]).compile()

        def run() -> None:
            s = holder["state"]
            for b in step_batches:
                s, _ = step(s, b)
            holder["state"] = jax.block_until_ready(s)
    elif variant == "jax_scan_unrolled":
        # The CPU trainer's form on another platform (on the CPU, `jax_trainer_round` times the trainer's own):
        # FUSED_STEPS unrolled steps per call, one call per chunk of the round.
        k = steps_per_call(len(idx), jax_tuned.FUSED_STEPS)
        chunks = [(images[i : i + k], labels[i : i + k]) for i in range(0, len(idx) - k + 1, k)]
        start = time.perf_counter()
        steps = jax_tuned.compile_train(jax_tuned.train_steps.lower(state, chunks[0], unroll=True), platform)

        def run() -> None:
            s = holder["state"]
            for chunk in chunks:
                s, _ = steps(s, chunk)
            holder["state"] = jax.block_until_ready(s)
    elif variant in NNX_VARIANTS:
        return nnx_round(variant, images, labels, dev, precision_name, idx)
    elif variant == "jax_epoch":
        # The accelerators' form on the CPU, the rolled-loop trap (on a GPU, `jax_trainer_round` times the trainer's
        # own): one call for the round, batches gathered on the device from the resident set.
        resident = jax.device_put((data.images, data.labels), dev)
        order = jax.device_put(idx.astype(np.int32), dev)
        start = time.perf_counter()
        steps = jax_tuned.compile_train(jax_tuned.train_epoch_steps.lower(state, resident, order), platform)

        def run() -> None:
            s, _ = steps(holder["state"], resident, order)
            holder["state"] = jax.block_until_ready(s)
    else:
        start = time.perf_counter()
        steps = jax_tuned.compile_train(jax_tuned.train_steps.lower(state, (images, labels), unroll=False), platform)

        def run() -> None:
            s, _ = steps(holder["state"], (images, labels))
            holder["state"] = jax.block_until_ready(s)

    compile_seconds = time.perf_counter() - start
    return Round(run, compile_seconds, _warm_up(run), idx.size, len(idx))


#: The JAX trainer's own path on each platform, timed through its compiled `Steps` (`jax_trainer_round`).
JAX_TRAINER_PATH = {"cpu": "jax_scan_unrolled", "gpu": "jax_epoch"}


def jax_trainer_round(data: JaxSplit, dev: jax.Device, batch_size: int, precision_name: str, idx: np.ndarray) -> Round:
    """What `python -m mnist_jax.train` runs: the trainer's own compiled steps (`mnist_jax.tuned.compile_steps`),
    on the training set as the trainer holds it (host memory on the CPU, resident on an accelerator), the round's
    batches cut into the trainer's calls (`Steps.calls`: FUSED_STEPS unrolled steps per call on the CPU). On an
    accelerator the trainer's one call is a whole epoch, compiled for an epoch's shape, so the round is one epoch.
    Its compile seconds are the trainer's: the train and the eval step."""
    mesh = make_mesh(dev.platform, 1)
    config = dataclasses.replace(train_config(precision_name), batch_size=batch_size)
    state = place(jax_tuned.create_state(0, config, dev), replicated(mesh))
    resident = jax_tuned.epoch_per_call(dev)
    train = JaxSplit(*place(tuple(data), replicated(mesh))) if resident else data
    order = (batch_order(0, 1, len(data.labels), batch_size) if resident else idx).astype(np.int32)
    start = time.perf_counter()
    state, steps, _ = jax_tuned.compile_steps(state, train, config, mesh)
    compile_seconds = time.perf_counter() - start
    calls = steps.calls(order)
    holder = {"state": state}

    def run() -> None:
        s = holder["state"]
        for rows in calls:
            s, _ = steps(s, rows)
        holder["state"] = jax.block_until_ready(s)

    return Round(run, compile_seconds, _warm_up(run), order.size, len(order))


def build_round(
    variant: str,
    mode: str,
    device: str,
    batch_size: int,
    precision_name: str,
    mnist: MNISTData,
    jax_mnist: JaxMNISTData,
    smoke: bool,
) -> Round:
    """A variant's round as every comparison builds it (the throughput benchmark, `experiments.ab`): the mode's
    images per round, from the split the mode uses."""
    images = images_per_round(mode, device, batch_size, smoke)
    if variant.startswith("torch"):
        return torch_round(variant, mode, mnist, device, batch_size, images, precision_name)
    split = jax_mnist.test if mode == "eval" else jax_mnist.train
    return jax_round(variant, mode, split, device, batch_size, images, mnist, precision_name)


def nnx_round(
    variant: str, images: jax.Array, labels: jax.Array, dev: jax.Device, precision_name: str, idx: np.ndarray
) -> Round:
    """The NNX variants' round, on the batches (steps, batch, ...) already on `dev`: the model and optimizer
    start from the parameters the Linen rows start from (`steps_nnx.create_model`). The functional routes are
    compiled as the Linen rows are (`compile_train`, with the trainer's CPU options); `nnx.jit` takes no
    compiler options, so its two rows compile with XLA's defaults: on the CPU, YNNPACK's fusions, which made
    Linen's step 1.6x slower (benchmarks/RESULTS.md). That is part of what `nnx.jit` costs as written."""
    with jax.default_device(dev):
        model, optimizer = steps_nnx.create_model(0, train_config(precision_name), dev)
    step_batches = [(images[i], labels[i]) for i in range(len(idx))]
    start = time.perf_counter()
    if variant in ("jax_nnx_jit", "jax_nnx_tree"):
        nnx_step = steps_nnx.train_step_nnx_jit if variant == "jax_nnx_jit" else steps_nnx.train_step_nnx_tree

        def step(batch: tuple[jax.Array, jax.Array]) -> jax.Array:
            return nnx_step(model, optimizer, batch)

        step(step_batches[0])  # nnx.jit compiles on the first call

        def run() -> None:
            for b in step_batches:
                loss = step(b)
            jax.block_until_ready((loss, nnx.state(model)))
    elif variant == "jax_nnx_leaves":
        graphdef, state = steps_nnx.split(model, optimizer)
        leaves, treedef = jax.tree.flatten(state)
        holder = {"leaves": leaves}
        lowered = steps_nnx.train_step_leaves.lower(graphdef, treedef, leaves, step_batches[0])
        step = jax_tuned.compile_train(lowered, dev.platform)

        def run() -> None:
            s = holder["leaves"]
            for b in step_batches:
                s, _ = step(s, b)
            holder["leaves"] = jax.block_until_ready(s)
    else:
        graphdef, state = steps_nnx.split(model, optimizer)
        holder = {"state": state}
        if variant == "jax_nnx_split":
            step = jax_tuned.compile_train(
                steps_nnx.train_step_split.lower(graphdef, state, step_batches[0]), dev.platform
            )
            calls = [(step, b) for b in step_batches]
        else:
            k = min(jax_tuned.FUSED_STEPS, len(idx)) if dev.platform == "cpu" else len(idx)
            chunks = [(images[i : i + k], labels[i : i + k]) for i in range(0, len(idx) - k + 1, k)]
            lowered = steps_nnx.train_steps_split.lower(graphdef, state, chunks[0], unroll=dev.platform == "cpu")
            step = jax_tuned.compile_train(lowered, dev.platform)
            calls = [(step, c) for c in chunks]

        def run() -> None:
            s = holder["state"]
            for call, batch in calls:
                s, _ = call(s, batch)
            holder["state"] = jax.block_until_ready(s)

    compile_seconds = time.perf_counter() - start
    return Round(run, compile_seconds, _warm_up(run), idx.size, len(idx))

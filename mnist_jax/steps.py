"""The JAX trainer's training steps: one SGD step, its compiled variants, and the choice among them.

Three variants compute the same SGD steps in the same order: `train_step`, one step per compiled call;
`train_steps`, FUSED_STEPS steps unrolled into one call (the CPU's path); `train_epoch_steps`, a whole
epoch as one rolled `lax.scan` on the resident training set (an accelerator's path). `compile_steps`
compiles the ones a run uses ahead of time, so that compilation is timed apart from training, and
`Steps` is what `mnist_jax.train.train_epoch` calls.

Also the state they update (`create_state`), and evaluation and prediction over a whole split (`evaluate`,
`predict`). The machinery around them (the device, the backends, compiler options, which variant runs where)
is `mnist_jax.runtime`.

Read it side by side with `mnist_torch/steps.py`: the names both define correspond, in the same order
(tests/test_architecture.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from jax.sharding import Mesh

from mnist_common.batches import num_batches
from mnist_common.config import EVAL_BATCH_SIZE, TrainConfig
from mnist_jax.data import Split, check_labels
from mnist_jax.model import CNN, init_params
from mnist_jax.parallel import batch_sharded, place, replicated
from mnist_jax.runtime import compile_train, epoch_per_call, fuse_steps

Batch = tuple[jax.Array, jax.Array]  # images (N, 28, 28, 1) float, labels (N,) int
Metrics = dict[str, jax.Array]


#: --precision's compute dtype of the training steps (the parameters stay float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bf16": jnp.bfloat16}


def create_state(seed: int, config: TrainConfig, device: jax.Device | None = None) -> TrainState:
    """Freshly initialized parameters (PyTorch's default distributions, drawn from `seed`'s key) and SGD state,
    for training on `device` (default: JAX's default device): a pytree of params, optimizer state and step count,
    with the model's `apply` (in the compute dtype, conv1 in the device's form) as static metadata. No RNG key:
    nothing after initialization is random, and the batch order comes from the seed (`mnist_common.batches`).
    """
    model = CNN(dtype=COMPUTE_DTYPES[config.precision], conv1_as_matmul=conv1_as_matmul_on(device))
    return TrainState.create(apply_fn=model.apply, params=init_params(jax.random.key(seed)), tx=make_optimizer(config))


def conv1_as_matmul_on(device: jax.Device | None = None) -> bool:
    """Whether the trainer computes conv1 as one matmul (`CNN.conv1_as_matmul`) on `device` (default: JAX's
    default device): on the CPU, where it trains faster with the same parameters (benchmarks/RESULTS.md);
    accelerators keep `nn.Conv`."""
    return (device or jax.local_devices()[0]).platform == "cpu"


#: SGD steps fused into one compiled call on the CPU. Unrolled (no XLA while loop), they train faster
#: than one call per step for a few seconds more compilation; more steps compile longer for little more
#: speed (see benchmarks/RESULTS.md, "Design measurements").
FUSED_STEPS = 16


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """optax.sgd is torch.optim.SGD: trace = momentum * trace + grad (the first trace is the grad
    itself, as in PyTorch), then params -= lr * trace. tests/test_parity.py checks both steps."""
    return optax.sgd(config.lr, momentum=config.momentum)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch: torch.nn.CrossEntropyLoss(), in at least float32. One-hot rather than
    `optax.softmax_cross_entropy_with_integer_labels`, whose gradient is a scatter-add, which XLA:GPU's
    deterministic mode runs serially; the same value to float32 rounding (tests/test_steps.py)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -(jax.nn.log_softmax(logits) * one_hot).sum(axis=-1).mean()


def loss_and_grads(params: Any, batch: Batch, apply_fn: Callable = CNN().apply) -> tuple[jax.Array, Any]:
    """Mean cross-entropy of one batch and its gradient (float32, like the parameters); traced into the compiled
    steps below."""
    images, labels = batch
    check_labels(images, labels)
    return jax.value_and_grad(lambda p: cross_entropy(apply_fn({"params": p}, images), labels))(params)


def _train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    loss, grads = loss_and_grads(state.params, batch, state.apply_fn)
    return state.apply_gradients(grads=grads), {"loss": loss}


#: One SGD step: (state, batch) -> (new state, {"loss"}). The old state's buffers are donated:
#: XLA updates the parameters in place, and the caller must use only the returned state.
train_step = jax.jit(_train_step, donate_argnums=0)


def _train_steps(state: TrainState, batches: Batch, unroll: int | bool = 1) -> tuple[TrainState, Metrics]:
    return jax.lax.scan(_train_step, state, batches, unroll=unroll)


#: K SGD steps in one call: `lax.scan` over K batches stacked on a leading axis; returns the state after them and
#: the K losses. One dispatch instead of K. `unroll=True` replaces XLA's while loop by K copies of the step: on
#: XLA:CPU the backward convolutions inside a while loop run many times slower (benchmarks/RESULTS.md).
train_steps = jax.jit(_train_steps, donate_argnums=0, static_argnames="unroll")


def _train_epoch_steps(state: TrainState, data: Batch, order: jax.Array) -> tuple[TrainState, Metrics]:
    images, labels = data

    def step(state: TrainState, idx: jax.Array) -> tuple[TrainState, Metrics]:
        return _train_step(state, (images[idx], labels[idx]))

    return jax.lax.scan(step, state, order)


#: A whole epoch in one call, the fastest path on a GPU: a rolled `lax.scan` over the rows of `order` (steps,
#: batch), each batch gathered on the device from the resident training set `data`; returns the state after
#: every step and the losses. One dispatch per epoch. Not for the CPU: the trap `train_steps` documents.
train_epoch_steps = jax.jit(_train_epoch_steps, donate_argnums=0)


@jax.jit
def eval_step(params: Any, batch: Batch) -> Metrics:
    """Summed loss and correct count of one batch, so that batches of any size add up exactly."""
    images, labels = batch
    check_labels(images, labels)
    logits = CNN().apply({"params": params}, images)
    return {
        "loss_sum": optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum(),
        "correct": (logits.argmax(axis=1) == labels).sum(),
    }


@jax.jit
def predict_step(params: Any, images: jax.Array) -> jax.Array:
    """Class probabilities of one batch; compiled on first use, after training, so no epoch time includes it."""
    return jax.nn.softmax(CNN().apply({"params": params}, images), axis=-1)


def evaluate(params: Any, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split."""
    sums = [
        eval_step(params, (split.images[i : i + EVAL_BATCH_SIZE], split.labels[i : i + EVAL_BATCH_SIZE]))
        for i in range(0, len(split.labels), EVAL_BATCH_SIZE)
    ]
    totals = jax.tree.map(lambda *x: float(sum(x)), *sums)
    n = len(split.labels)
    return totals["loss_sum"] / n, totals["correct"] / n


def predict(params: Any, images: jax.Array) -> np.ndarray:
    """Class probabilities (N, 10) of normalized images (N, 28, 28, 1), as a NumPy array on the host."""
    probabilities = [
        predict_step(params, images[start : start + EVAL_BATCH_SIZE])
        for start in range(0, len(images), EVAL_BATCH_SIZE)
    ]
    return np.concatenate([np.asarray(p) for p in probabilities])


def _same(state: Any) -> Any:
    return state


class Steps(NamedTuple):
    """The compiled training steps of one run, as `mnist_jax.train.train_epoch` calls them, with the training set
    and the mesh they read: a whole epoch per call, or FUSED_STEPS at a time plus one at a time, or (several CPU
    devices) one at a time. `start` and `finish` turn the trainer's `TrainState` into the state the steps take
    and back, once per epoch (Linen's: the `TrainState` itself; Flax NNX's: `mnist_jax.steps_nnx`)."""

    train: Split
    mesh: Mesh
    single: Callable | None = None
    fused: Callable | None = None
    epoch: Callable | None = None
    name: str = "Linen"
    start: Callable[[TrainState], Any] = _same
    finish: Callable[[Any], TrainState] = _same

    def describe(self) -> str:
        calls = "one step per call" if self.fused is None else f"{FUSED_STEPS} unrolled steps per call"
        return f"{self.name}, {'a whole epoch per call' if self.epoch is not None else calls}"

    def calls(self, order: np.ndarray) -> list[np.ndarray]:
        """The epoch's (steps, batch) order cut into the rows of each call: all of them in one, or
        FUSED_STEPS per call and the few left over one per call, or one per call."""
        if self.epoch is not None:
            return [order]
        fused = len(order) - len(order) % FUSED_STEPS if self.fused is not None else 0
        return [order[start : start + FUSED_STEPS] for start in range(0, fused, FUSED_STEPS)] + [
            order[start : start + 1] for start in range(fused, len(order))
        ]

    def __call__(self, state: TrainState, rows: np.ndarray) -> tuple[TrainState, jax.Array]:
        """Train on the batches `rows` (one of `calls`); returns the new state and their losses, still on the devices.
        The whole epoch gathers its batches on the devices; the other calls' batches are gathered in host memory."""
        train, mesh = self.train, self.mesh
        if self.epoch is not None:
            state, metrics = self.epoch(state, tuple(train), place(rows, batch_sharded(mesh, stacked=True)))
            return state, metrics["loss"]
        if len(rows) > 1:
            state, metrics = self.fused(
                state, place((train.images[rows], train.labels[rows]), batch_sharded(mesh, stacked=True))
            )
            return state, metrics["loss"]
        idx = rows[0]
        state, metrics = self.single(state, place((train.images[idx], train.labels[idx]), batch_sharded(mesh)))
        return state, metrics["loss"][None]


def compile_ahead(uncompiled: Steps, state: TrainState, config: TrainConfig) -> Steps:
    """The variants of `uncompiled` this run calls (`mnist_jax.runtime.epoch_per_call`, `fuse_steps`), and the eval
    step, compiled ahead of time for the arrays' places on the mesh (or loaded from the persistent cache)."""
    train, mesh, batch_size = uncompiled.train, uncompiled.mesh, config.batch_size
    device, begun = mesh.devices.flat[0], uncompiled.start(state)
    if epoch_per_call(device):
        order = np.zeros((num_batches(len(train.labels), batch_size), batch_size), np.int32)
        lowered = uncompiled.epoch.lower(begun, tuple(train), place(order, batch_sharded(mesh, stacked=True)))
        steps = uncompiled._replace(single=None, fused=None, epoch=compile_train(lowered, device.platform))
    else:
        batch = place((train.images[:batch_size], train.labels[:batch_size]), batch_sharded(mesh))
        single = compile_train(uncompiled.single.lower(begun, batch), device.platform)
        steps = uncompiled._replace(single=single, fused=None, epoch=None)
        if fuse_steps(mesh):
            idx = np.arange(FUSED_STEPS * batch_size).reshape(FUSED_STEPS, batch_size) % len(train.labels)
            chunk = place((train.images[idx], train.labels[idx]), batch_sharded(mesh, stacked=True))
            lowered = uncompiled.fused.lower(begun, chunk, unroll=True)
            steps = steps._replace(fused=compile_train(lowered, device.platform))
    compile_eval(state, train, config, mesh)
    return steps


def compile_eval(state: TrainState, train: Split, config: TrainConfig, mesh: Mesh) -> None:
    """The eval step compiled for a test batch as `evaluate` takes it, so that no epoch's evaluation compiles."""
    shape, everywhere = (min(EVAL_BATCH_SIZE, config.test_size), *train.images.shape[1:]), replicated(mesh)
    images = jax.ShapeDtypeStruct(shape, train.images.dtype, sharding=everywhere)
    labels = jax.ShapeDtypeStruct(shape[:1], train.labels.dtype, sharding=everywhere)
    eval_step.lower(state.params, (images, labels)).compile()


def compile_steps(state: TrainState, train: Split, config: TrainConfig, mesh: Mesh) -> tuple[TrainState, Steps, float]:
    """Linen's training steps on `mesh`, compiled ahead of time (`compile_ahead`), so that compilation is timed
    apart from the epochs; `train` as `train_epoch` takes it. Returns the state (as given: JAX's steps return new
    states, they update none in place), the steps and the seconds spent. Flax NNX's steps (--api nnx-*):
    `mnist_jax.steps_nnx.compile_steps`."""
    start = time.perf_counter()
    steps = compile_ahead(Steps(train, mesh, train_step, train_steps, train_epoch_steps), state, config)
    return state, steps, time.perf_counter() - start

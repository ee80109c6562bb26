"""The JAX trainer's training steps: one SGD step, its compiled variants, and the choice among them.

Three variants compute the same SGD steps in the same order: `train_step`, one step per compiled call;
`train_steps`, FUSED_STEPS steps unrolled into one call (the CPU's path); `train_epoch_steps`, a whole
epoch as one rolled `lax.scan` on the resident training set (an accelerator's path). `compile_steps`
compiles the ones a run uses ahead of time, so that compilation is timed apart from training, and
`Steps` is what `mnist_jax.train.train_epoch` calls.

Also the state they update (`create_state`, in the compute dtype of --precision), and evaluation and
prediction over a whole split (`evaluate`, `predict`). The machinery around them (the device, the backends,
XLA_FLAGS, compiler options) is `mnist_jax.runtime`.

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
from mnist_jax.data import Split
from mnist_jax.model import CNN
from mnist_jax.parallel import batch_sharded, place, replicated
from mnist_jax.runtime import compile_train

Batch = tuple[jax.Array, jax.Array]  # images (N, 28, 28, 1) float, labels (N,) int
Metrics = dict[str, jax.Array]


#: --precision's compute dtype of the training steps (the parameters stay float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bf16": jnp.bfloat16}


def create_state(seed: int, config: TrainConfig, device: jax.Device | None = None) -> TrainState:
    """Freshly initialized parameters (PyTorch's default distributions, drawn from `seed`'s key) and SGD state,
    for training on `device` (default: JAX's default device).

    The state is a pytree: params, optimizer state and step count, with the model's `apply` (in the
    training compute dtype) as static metadata. It carries no RNG key
    because nothing after initialization is random (no dropout); the batch order comes
    from the seed through `mnist_common.batches`, shared with the PyTorch trainer. The model computes conv1 in the
    device's form (`conv1_as_matmul_on`). The Flax NNX routes start from this very state (`mnist_jax.steps_nnx`).
    """
    model = CNN(dtype=COMPUTE_DTYPES[config.precision], conv1_as_matmul=conv1_as_matmul_on(device))
    return TrainState.create(apply_fn=model.apply, params=_init_params(jax.random.key(seed)), tx=make_optimizer(config))


@jax.jit
def _init_params(key: jax.Array) -> Any:
    """Linen's init as one compiled program: run op by op, it compiled each of its operations apart, the
    slowest part of a trainer's start-up; the same values either way (the same random bits, scaled alike)."""
    return CNN().init(key, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]


def conv1_as_matmul_on(device: jax.Device | None = None) -> bool:
    """Whether the trainer computes conv1 as one matmul (`CNN.conv1_as_matmul`) on `device` (default: JAX's
    default device): on the CPU, where it trains faster with the same parameters (benchmarks/RESULTS.md);
    accelerators keep `nn.Conv`."""
    return (device or jax.local_devices()[0]).platform == "cpu"


#: SGD steps fused into one compiled call on the CPU. Unrolled (no XLA while loop), they train faster
#: than one call per step for a few seconds more compilation; more steps compile longer for little more
#: speed (see benchmarks/RESULTS.md, "Design measurements").
FUSED_STEPS = 16

#: Calls (chunks of FUSED_STEPS steps, or single steps) the CPU path lets JAX queue ahead of the one
#: running. Two keep the device busy; without a bound the whole epoch was queued, and a Ctrl-C then
#: waited for all of it before the process could exit (see benchmarks/RESULTS.md, "Design measurements").
IN_FLIGHT = 2


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """optax.sgd is torch.optim.SGD: trace = momentum * trace + grad (the first trace is the grad
    itself, as in PyTorch), then params -= lr * trace. tests/test_parity.py checks both steps."""
    return optax.sgd(config.lr, momentum=config.momentum)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch: torch.nn.CrossEntropyLoss(), in at least float32 (bfloat16 logits are
    widened).

    Written with one-hot labels rather than `optax.softmax_cross_entropy_with_integer_labels`: that one picks
    each row's logit with `take_along_axis`, whose gradient is a scatter-add, the op XLA:GPU's deterministic
    mode runs in a slow serial form; the one-hot product's gradient is elementwise (no scatter), with the same
    value to float32 rounding (tests/test_steps.py)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -(jax.nn.log_softmax(logits) * one_hot).sum(axis=-1).mean()


def check_labels(images: jax.Array, labels: jax.Array) -> None:
    """Trace-time check (shapes and dtypes are static), so a bad batch fails in Python, not in XLA."""
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integer class indices of shape ({images.shape[0]},) to match the images, "
            f"got shape {tuple(labels.shape)} {labels.dtype}; use mnist_jax.data.load_mnist()"
        )


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


#: K SGD steps in one call: `lax.scan` over batches stacked on a leading axis, images (K, N, 28, 28, 1),
#: labels (K, N); returns the state after the K steps and the K losses. One dispatch instead of K.
#: `unroll=True` replaces XLA's while loop by K copies of the step: on XLA:CPU the backward convolutions
#: inside a while loop run many times slower than the same convolutions outside one (benchmarks/RESULTS.md).
train_steps = jax.jit(_train_steps, donate_argnums=0, static_argnames="unroll")


def _train_epoch_steps(state: TrainState, data: Batch, order: jax.Array) -> tuple[TrainState, Metrics]:
    images, labels = data

    def step(state: TrainState, idx: jax.Array) -> tuple[TrainState, Metrics]:
        return _train_step(state, (images[idx], labels[idx]))

    return jax.lax.scan(step, state, order)


#: A whole epoch in one call, the fastest path on a GPU: a rolled `lax.scan` over the rows of `order`
#: (steps, batch), the epoch's batch order as one integer array, each batch gathered on the device
#: from the resident training set `data` (images (N, 28, 28, 1), labels (N,)); returns the state after
#: every step and the steps' losses. One dispatch and one small upload per epoch instead of one per
#: batch. Not for the CPU: there the rolled loop is the trap `train_steps` documents.
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
        if self.epoch is not None:
            calls = "a whole epoch per call"
        else:
            calls = f"{FUSED_STEPS} unrolled steps per call" if self.fused is not None else "one step per call"
        return f"{self.name}, {calls}"

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

        The whole-epoch call takes the resident training set and the order, split along its batch axis
        (each device gathers its share of every batch); the others take the batches gathered in host
        memory, each split among the devices."""
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


def fuse_steps(mesh: Mesh) -> bool:
    """Whether the CPU path fuses FUSED_STEPS steps per call: on one device only. Split over several, the
    unrolled steps, each with its gradient all-reduce, ran slower per step than one step per call, while one
    device gains from fusing (see benchmarks/RESULTS.md, "Design measurements")."""
    return mesh.size == 1


def epoch_per_call(device: jax.Device) -> bool:
    """Whether the trainer runs a whole epoch per call (`train_epoch_steps`): on accelerators, where the
    rolled loop is fastest. XLA:CPU runs the rolled loop's backward convolutions many times slower (the
    while-loop trap `train_steps` documents), so the CPU fuses FUSED_STEPS unrolled steps per call instead."""
    return device.platform != "cpu"


def compile_ahead(uncompiled: Steps, state: TrainState, config: TrainConfig) -> Steps:
    """`uncompiled`'s jitted variants that this run calls, compiled ahead of time for the mesh's platform and the
    arrays' places on it (or loaded from the persistent compilation cache), and the eval step: the whole epoch on
    an accelerator; FUSED_STEPS unrolled steps and the single step on one CPU device; the single step alone on
    several. Linen's steps and Flax NNX's split-state steps compile alike."""
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
    """The eval step compiled for a batch of the test set as `evaluate` takes it (replicated on the mesh, the
    training images' type), so that the first epoch's evaluation does not compile."""
    shape = (min(EVAL_BATCH_SIZE, config.test_size), *train.images.shape[1:])
    everywhere = replicated(mesh)
    batch = (
        jax.ShapeDtypeStruct(shape, train.images.dtype, sharding=everywhere),
        jax.ShapeDtypeStruct(shape[:1], train.labels.dtype, sharding=everywhere),
    )
    eval_step.lower(state.params, batch).compile()


def compile_steps(state: TrainState, train: Split, config: TrainConfig, mesh: Mesh) -> tuple[TrainState, Steps, float]:
    """Linen's training steps on `mesh`, compiled ahead of time (`compile_ahead`), so that compilation is timed
    apart from the epochs; `train` as `train_epoch` takes it. Returns the state (as given: JAX's steps return new
    states, they update none in place), the steps and the seconds spent. Flax NNX's steps (--api nnx-*):
    `mnist_jax.steps_nnx.compile_steps`."""
    start = time.perf_counter()
    steps = compile_ahead(Steps(train, mesh, train_step, train_steps, train_epoch_steps), state, config)
    return state, steps, time.perf_counter() - start

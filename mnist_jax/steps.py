"""The JAX training step as a user writes it first: the state, the loss, one SGD step under `jax.jit`, evaluation.

Read it side by side with `mnist_torch/steps.py`: the same names in the same order (tests/test_architecture.py).
The differences are JAX's: the state is an immutable pytree that `train_step` returns anew, and the step is a
pure function compiled by `jax.jit`. The trainer runs the faster forms of this step in `mnist_jax.tuned`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from mnist_common.config import EVAL_BATCH_SIZE, TrainConfig
from mnist_jax.data import Split, check_labels
from mnist_jax.model import CNN, INPUT_SHAPE

Batch = tuple[jax.Array, jax.Array]  # images (N, 28, 28, 1) float, labels (N,) int
Metrics = dict[str, jax.Array]

#: --precision's compute dtype of the training steps (the parameters stay float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bf16": jnp.bfloat16}

#: The parameters, optax's SGD state and the step count, one pytree; the model's `apply` rides along as static data.
TrainState = train_state.TrainState


def create_state(seed: int, config: TrainConfig, device: jax.Device | None = None) -> TrainState:
    """Fresh parameters drawn from `seed`'s key, on `device` (default: JAX's), and SGD with momentum.
    optax.sgd is torch.optim.SGD: trace = momentum * trace + grad, the first trace the grad itself."""
    optimizer = optax.sgd(config.lr, momentum=config.momentum)
    with jax.default_device(device):
        params = _init(jax.random.key(seed))
        return TrainState.create(
            apply_fn=CNN(dtype=COMPUTE_DTYPES[config.precision]).apply, params=params, tx=optimizer
        )


@jax.jit  # Linen's init as one program: run op by op, it compiles each operation apart
def _init(key: jax.Array) -> Any:
    return CNN().init(key, jnp.zeros((1, *INPUT_SHAPE), jnp.float32))["params"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """torch.nn.CrossEntropyLoss(): the batch's mean, in at least float32. One-hot, not an integer-label gather,
    whose gradient is a scatter-add that XLA:GPU's deterministic mode runs serially."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -(jax.nn.log_softmax(logits) * one_hot).sum(axis=-1).mean()


@functools.partial(jax.jit, donate_argnums=0)  # the old state's buffers are reused: use only the returned state
def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """One SGD step on one batch: the new state and the batch's mean loss."""
    images, labels = batch
    check_labels(images, labels)

    def loss_of(params: Any) -> jax.Array:
        return cross_entropy(state.apply_fn({"params": params}, images), labels)

    loss, grads = jax.value_and_grad(loss_of)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


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
    """Class probabilities of one batch."""
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

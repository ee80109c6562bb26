"""The training step in Flax NNX, by its two idiomatic routes, beside the Linen one in `mnist_jax.steps`.

- `nnx.jit` (Flax's MNIST example): a stateful step over the module and an `nnx.Optimizer`, which it
  updates in place. `nnx.jit` splits the Python objects into a graph and arrays on every call, and merges
  them back after: Python work per call, which per-step training pays.
- `nnx.split` / `jax.jit` / `nnx.merge` (functional): split once, then a plain `jax.jit` step over the
  pure state (a pytree, donated like Linen's `TrainState`), which merges a throw-away module inside the
  trace and splits it again before returning. No graph walk outside the trace.
Both compute exactly the Linen step: the same loss (`mnist_jax.steps.cross_entropy`), the same optax SGD,
from the same parameters (tests/test_nnx.py).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from mnist_common.config import TrainConfig
from mnist_jax.model import CNN as LinenCNN
from mnist_jax.model_nnx import CNN, from_linen_params
from mnist_jax.steps import COMPUTE_DTYPES, Batch, check_labels, cross_entropy, make_optimizer

#: The functional route's state: `nnx.split((model, optimizer))`'s state half, a pytree of arrays.
SplitState = nnx.State


def create_model(seed: int, config: TrainConfig) -> tuple[CNN, nnx.Optimizer]:
    """The NNX model and its SGD optimizer, from the very parameters `mnist_jax.steps.create_state` draws for
    `seed` (Linen's init, converted), so that a seed trains the same in either API."""
    params = LinenCNN().init(jax.random.key(seed), jax.numpy.zeros((1, 28, 28, 1), jax.numpy.float32))["params"]
    model = from_linen_params(params, dtype=COMPUTE_DTYPES[config.precision])
    return model, nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)


def loss_and_grads(model: CNN, batch: Batch) -> tuple[jax.Array, nnx.State]:
    """Mean cross-entropy of one batch and its gradient with respect to the module's parameters."""
    images, labels = batch
    check_labels(images, labels)
    return nnx.value_and_grad(lambda m: cross_entropy(m(images), labels))(model)


@nnx.jit
def train_step_nnx_jit(model: CNN, optimizer: nnx.Optimizer, batch: Batch) -> jax.Array:
    """One SGD step, updating `model` and `optimizer` in place; returns the batch's mean loss."""
    loss, grads = loss_and_grads(model, batch)
    optimizer.update(model, grads)
    return loss


def split(model: CNN, optimizer: nnx.Optimizer) -> tuple[nnx.GraphDef, SplitState]:
    """The functional route's start: the static graph (hashable, a jit static argument) and the pure state."""
    return nnx.split((model, optimizer))


def _train_step_split(graphdef: nnx.GraphDef, state: SplitState, batch: Batch) -> tuple[SplitState, jax.Array]:
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = loss_and_grads(model, batch)
    optimizer.update(model, grads)
    return nnx.split((model, optimizer))[1], loss


#: One SGD step over the pure state: (graphdef, state, batch) -> (new state, loss). The old state is donated.
train_step_split = jax.jit(_train_step_split, static_argnums=0, donate_argnums=1)


def merge(graphdef: nnx.GraphDef, state: SplitState) -> tuple[CNN, nnx.Optimizer]:
    """Back from the functional route: the module and optimizer holding `state`."""
    return nnx.merge(graphdef, state)


def linen_params(state: SplitState) -> dict[str, Any]:
    """The model's parameters in the split state, as Linen's `params` tree (for checkpoints and the port)."""
    return nnx.to_pure_dict(nnx.filter_state(state[0], nnx.Param))

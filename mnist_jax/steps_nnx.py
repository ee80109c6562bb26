"""The training step in Flax NNX, by its two idiomatic routes, beside the Linen one in `mnist_jax.steps`.

- `nnx.jit` (Flax's MNIST example): a stateful step over the module and an `nnx.Optimizer`, which it
  updates in place. `nnx.jit` splits the Python objects into a graph and arrays on every call, and merges
  them back after: Python work per call, which per-step training pays. Two remedies from Flax itself:
  NNX's tree mode (`nnx.jit(..., graph=False)`, `train_step_nnx_tree`), and `nnx.cached_partial`, which
  caches the walk for a module and optimizer bound once (`cached_train_step`).
- `nnx.split` / `jax.jit` / `nnx.merge` (functional): split once, then a plain `jax.jit` step over the
  state (a pytree, donated like Linen's `TrainState`), which merges a throw-away module inside the
  trace and splits it again before returning. No graph walk outside the trace, but `nnx.State`'s
  leaves are `Variable` nodes that JAX flattens and rebuilds in Python on every call.
- The same with the state flattened once into its list of arrays (`flatten`, `train_step_leaves`): JAX
  then passes a plain list, the cheapest call there is (benchmarks/RESULTS.md, "Flax NNX").
Every route computes exactly the Linen step: the same loss (`mnist_jax.steps.cross_entropy`), the same optax SGD,
from the same parameters (tests/test_nnx.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from mnist_common.config import TrainConfig
from mnist_jax.model import CNN as LinenCNN
from mnist_jax.model_nnx import CNN, from_linen_params
from mnist_jax.steps import COMPUTE_DTYPES, Batch, check_labels, cross_entropy, make_optimizer

#: The functional route's state: `nnx.split((model, optimizer))`'s state half, a pytree of arrays.
SplitState = nnx.State


def create_model(seed: int, config: TrainConfig, device: jax.Device | None = None) -> tuple[CNN, nnx.Optimizer]:
    """The NNX model and its SGD optimizer for training on `device` (default: JAX's default device), from the very
    parameters `mnist_jax.steps.create_state` draws for `seed` (Linen's init, converted), with the same choice of
    conv1's form (a matmul on the CPU), so that a seed trains the same in either API."""
    platform = (device or jax.local_devices()[0]).platform
    params = LinenCNN().init(jax.random.key(seed), jax.numpy.zeros((1, 28, 28, 1), jax.numpy.float32))["params"]
    model = from_linen_params(params, COMPUTE_DTYPES[config.precision], conv1_as_matmul=platform == "cpu")
    return model, nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)


def loss_and_grads(model: CNN, batch: Batch) -> tuple[jax.Array, nnx.State]:
    """Mean cross-entropy of one batch and its gradient with respect to the module's parameters."""
    images, labels = batch
    check_labels(images, labels)
    return nnx.value_and_grad(lambda m: cross_entropy(m(images), labels))(model)


def _train_step_nnx(model: CNN, optimizer: nnx.Optimizer, batch: Batch) -> jax.Array:
    loss, grads = loss_and_grads(model, batch)
    optimizer.update(model, grads)
    return loss


#: One SGD step, updating `model` and `optimizer` in place; returns the batch's mean loss. Flax's example's form.
train_step_nnx_jit = nnx.jit(_train_step_nnx)

#: The same in NNX's tree mode (`graph=False`): the module and optimizer are taken as plain pytrees, without
#: the graph walk (which also tracks shared references; this CNN has none), and still updated in place.
train_step_nnx_tree = nnx.jit(_train_step_nnx, graph=False)


def cached_train_step(model: CNN, optimizer: nnx.Optimizer) -> Callable[[Batch], jax.Array]:
    """`train_step_nnx_jit`'s step with `model` and `optimizer` bound once by `nnx.cached_partial`, which caches
    the graph walk, as Flax's documentation writes it (graph mode, graph updates): batch -> loss."""
    with nnx.set_graph_mode(True), nnx.set_graph_updates(True):
        step = nnx.jit(_train_step_nnx, graph=True, graph_updates=True)
        return nnx.cached_partial(step, model, optimizer)


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


def _train_steps_split(
    graphdef: nnx.GraphDef, state: SplitState, batches: Batch, unroll: int | bool = 1
) -> tuple[SplitState, jax.Array]:
    return jax.lax.scan(lambda s, batch: _train_step_split(graphdef, s, batch), state, batches, unroll=unroll)


#: K steps of the functional route in one call, as `mnist_jax.steps.train_steps` fuses Linen's: batches stacked
#: on a leading axis (K, N, ...); `unroll=True` for the CPU (the while-loop trap `train_steps` documents).
train_steps_split = jax.jit(_train_steps_split, static_argnums=0, donate_argnums=1, static_argnames="unroll")


def flatten(state: SplitState) -> tuple[list[jax.Array], Any]:
    """The split state as its list of arrays and the tree structure to rebuild it (`unflatten`)."""
    return jax.tree.flatten(state)


def unflatten(treedef: Any, leaves: list[jax.Array]) -> SplitState:
    return jax.tree.unflatten(treedef, leaves)


def _train_step_leaves(
    graphdef: nnx.GraphDef, treedef: Any, leaves: list[jax.Array], batch: Batch
) -> tuple[list[jax.Array], jax.Array]:
    state, loss = _train_step_split(graphdef, unflatten(treedef, leaves), batch)
    return jax.tree.leaves(state), loss


#: One SGD step over the flattened state: (graphdef, treedef, leaves, batch) -> (new leaves, loss); the old
#: leaves are donated. The structure is rebuilt only while tracing.
train_step_leaves = jax.jit(_train_step_leaves, static_argnums=(0, 1), donate_argnums=2)


def merge(graphdef: nnx.GraphDef, state: SplitState) -> tuple[CNN, nnx.Optimizer]:
    """Back from the functional route: the module and optimizer holding `state`."""
    return nnx.merge(graphdef, state)


def linen_params(state: SplitState) -> dict[str, Any]:
    """The model's parameters in the split state, as Linen's `params` tree (for checkpoints and the port)."""
    return nnx.to_pure_dict(nnx.filter_state(state[0], nnx.Param))

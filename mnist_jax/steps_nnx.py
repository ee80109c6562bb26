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
  then passes a plain list, the cheapest call there is (docs/benchmarks.md's NNX rows measure each).
Every route computes exactly the Linen step: the same loss (`mnist_jax.steps.cross_entropy`), the same optax SGD,
from the same parameters (tests/test_nnx.py).

The trainer's --api runs the first two (`compile_steps`): its checkpoints, evaluation and weights read the Linen
`TrainState`, which each epoch converts to the route's state and back (`to_split_state`, `to_train_state`: the
same arrays, rearranged, no copy), so every API writes the same files and one can resume another's run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.training.train_state import TrainState
from jax.sharding import Mesh

from mnist_common.config import JAX_APIS, TrainConfig
from mnist_jax.data import Split, check_labels
from mnist_jax.model_nnx import CNN, from_linen_params
from mnist_jax.steps import COMPUTE_DTYPES, Batch, Metrics, cross_entropy
from mnist_jax.tuned import Steps, compile_ahead, compile_eval, conv1_as_matmul_on, create_state

#: The functional route's state: `nnx.split((model, optimizer))`'s state half, a pytree of arrays.
SplitState = nnx.State


def create_model(seed: int, config: TrainConfig, device: jax.Device | None = None) -> tuple[CNN, nnx.Optimizer]:
    """The NNX model and its SGD optimizer for training on `device` (default: JAX's default device), from the very
    parameters `mnist_jax.tuned.create_state` draws for `seed`, with the same choice of conv1's form
    (`conv1_as_matmul_on`), so that a seed trains the same in either API."""
    state = create_state(seed, config, device)
    dtype = COMPUTE_DTYPES[config.precision]
    model = from_linen_params(state.params, dtype, conv1_as_matmul=conv1_as_matmul_on(device))
    return model, nnx.Optimizer(model, state.tx, wrt=nnx.Param)


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


def _train_step_split(graphdef: nnx.GraphDef, state: SplitState, batch: Batch) -> tuple[SplitState, Metrics]:
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = loss_and_grads(model, batch)
    optimizer.update(model, grads)
    return nnx.split((model, optimizer))[1], {"loss": loss}


#: One SGD step over the pure state: (graphdef, state, batch) -> (new state, {"loss"}), as Linen's `train_step`.
#: The old state is donated.
train_step_split = jax.jit(_train_step_split, static_argnums=0, donate_argnums=1)


def _train_steps_split(
    graphdef: nnx.GraphDef, state: SplitState, batches: Batch, unroll: int | bool = 1
) -> tuple[SplitState, Metrics]:
    return jax.lax.scan(functools.partial(_train_step_split, graphdef), state, batches, unroll=unroll)


#: K steps of the functional route in one call, as `mnist_jax.steps.train_steps` fuses Linen's: batches stacked
#: on a leading axis (K, N, ...); `unroll=True` for the CPU (the while-loop trap `train_steps` documents).
train_steps_split = jax.jit(_train_steps_split, static_argnums=0, donate_argnums=1, static_argnames="unroll")


def _train_epoch_steps_split(
    graphdef: nnx.GraphDef, state: SplitState, data: Batch, order: jax.Array
) -> tuple[SplitState, Metrics]:
    images, labels = data

    def step(state: SplitState, idx: jax.Array) -> tuple[SplitState, Metrics]:
        return _train_step_split(graphdef, state, (images[idx], labels[idx]))

    return jax.lax.scan(step, state, order)


def _train_step_leaves(
    graphdef: nnx.GraphDef, treedef: Any, leaves: list[jax.Array], batch: Batch
) -> tuple[list[jax.Array], Metrics]:
    state, metrics = _train_step_split(graphdef, jax.tree.unflatten(treedef, leaves), batch)
    return jax.tree.leaves(state), metrics


#: One SGD step over the split state flattened (`jax.tree.flatten`) into its list of arrays:
#: (graphdef, treedef, leaves, batch) -> (new leaves, {"loss"}); the old leaves are donated. The structure is
#: rebuilt only while tracing.
train_step_leaves = jax.jit(_train_step_leaves, static_argnums=(0, 1), donate_argnums=2)


def merge(graphdef: nnx.GraphDef, state: SplitState) -> tuple[CNN, nnx.Optimizer]:
    """Back from the functional route: the module and optimizer holding `state`."""
    return nnx.merge(graphdef, state)


def linen_params(state: SplitState) -> dict[str, Any]:
    """The model's parameters in the split state, as Linen's `params` tree (for checkpoints and the port)."""
    return nnx.to_pure_dict(nnx.filter_state(state[0], nnx.Param))


def to_split_state(train_state: TrainState, like: SplitState) -> SplitState:
    """Linen's `TrainState` as the split state of the same model and optimizer (`like` gives the structure; its
    leaves may be abstract). Both hold the same arrays: the parameters, SGD's momentum trace (each in the
    parameters' sorted order) and the step count; the split state orders them model first, then the
    optimizer's `opt_state` and `step`. The arrays move, none is copied (tests/test_nnx.py)."""
    arranged = {0: train_state.params, 1: {"opt_state": train_state.opt_state, "step": train_state.step}}
    return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(arranged))


def to_train_state(state: SplitState, like: TrainState) -> TrainState:
    """The split state back as Linen's `TrainState` (`like` gives the static half: the model's apply and optax's
    transformation, and the optimizer state's structure): what checkpoints, evaluation and weights read."""
    pure = nnx.to_pure_dict(state)
    model, optimizer = pure[0], pure[1]
    opt_state = jax.tree.unflatten(jax.tree.structure(like.opt_state), jax.tree.leaves(optimizer["opt_state"]))
    return like.replace(step=optimizer["step"], params=model, opt_state=opt_state)


def _train_step_stateful(state: tuple[CNN, nnx.Optimizer], batch: Batch) -> tuple[tuple[CNN, nnx.Optimizer], Metrics]:
    return state, {"loss": train_step_nnx_jit(*state, batch)}


def _merge_train_state(train_state: TrainState, graphdef: nnx.GraphDef, like: SplitState) -> tuple[CNN, nnx.Optimizer]:
    return merge(graphdef, to_split_state(train_state, like))


def _split_train_state(objects: tuple[CNN, nnx.Optimizer], like: TrainState) -> TrainState:
    return to_train_state(nnx.state(objects), like)


def compile_steps(state: TrainState, train: Split, config: TrainConfig, mesh: Mesh) -> tuple[TrainState, Steps, float]:
    """The training steps of --api `config.api` on `mesh`, as `mnist_jax.steps.compile_steps` gives Linen's: the
    same calls on the same batches, on the API's own form of the state, converted from the trainer's `TrainState`
    and back once per epoch (`Steps.start`, `Steps.finish`).

    - nnx-split: the functional route, its three variants jitted over the split state with the graph bound,
      compiled ahead of time with the trainer's compiler options, as Linen's are (`compile_ahead`).
    - nnx-jit: `train_step_nnx_jit`, Flax's example's form, one step per call on every device. `nnx.jit`
      compiles on its first call, here on a copy of the state, with XLA's default options (on the
      CPU its YNNPACK fusions cost this step; `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=` removes them).
    """
    begun = time.perf_counter()
    device = mesh.devices.flat[0]
    like = jax.eval_shape(lambda: create_state(config.seed, config, device))  # only the structure is used
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: create_model(config.seed, config, device)))
    if config.api == "nnx-split":
        uncompiled = Steps(
            train,
            mesh,
            single=jax.jit(functools.partial(_train_step_split, graphdef), donate_argnums=0),
            fused=jax.jit(functools.partial(_train_steps_split, graphdef), donate_argnums=0, static_argnames="unroll"),
            epoch=jax.jit(functools.partial(_train_epoch_steps_split, graphdef), donate_argnums=0),
            name="Flax NNX, split state",
            start=functools.partial(to_split_state, like=abstract),
            finish=functools.partial(to_train_state, like=like),
        )
        return state, compile_ahead(uncompiled, state, config), time.perf_counter() - begun
    if config.api == "nnx-jit":
        steps = Steps(
            train,
            mesh,
            single=_train_step_stateful,
            name="Flax NNX, nnx.jit",
            start=functools.partial(_merge_train_state, graphdef=graphdef, like=abstract),
            finish=functools.partial(_split_train_state, like=like),
        )
        copy = steps.start(jax.tree.map(jnp.copy, state))  # no epoch's time includes the first call's compilation
        jax.block_until_ready(steps(copy, np.arange(config.batch_size)[None] % len(train.labels)))
        compile_eval(state, train, config, mesh)
        return state, steps, time.perf_counter() - begun
    raise ValueError(f"--api {config.api!r} is not one of {', '.join(JAX_APIS)} with Flax NNX steps; pass one of them")

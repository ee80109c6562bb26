"""The Flax NNX CNN and its two training routes against the Linen mirror: same parameters, same logits, same steps."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from mnist_common.config import TrainConfig
from mnist_jax import steps as jax_steps
from mnist_jax import steps_nnx
from mnist_jax.model import CNN as LinenCNN
from mnist_jax.model_nnx import CNN, from_linen_params, to_linen_params
from mnist_jax.port import params_from_torch, params_to_torch
from mnist_torch.model import CNN as TorchCNN

FAN_IN = {"conv1": 1 * 3 * 3, "conv2": 32 * 3 * 3, "fc1": 64 * 7 * 7, "fc2": 256}
CONFIG = TrainConfig()


@pytest.fixture(scope="module")
def linen_params():
    return LinenCNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]


def test_the_same_parameters_give_bit_identical_logits(linen_params, jax_mnist):
    """Both modules call the same convolutions, dots and shared functions on the same arrays: the same bits."""
    images = jnp.asarray(jax_mnist.test.images[:64])
    linen = LinenCNN().apply({"params": linen_params}, images)
    np.testing.assert_array_equal(np.asarray(from_linen_params(linen_params)(images)), np.asarray(linen))


def test_conversion_is_exact_both_ways_and_through_pytorch(linen_params, jax_mnist):
    model = from_linen_params(linen_params)
    for got, want in zip(jax.tree.leaves(to_linen_params(model)), jax.tree.leaves(linen_params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # PyTorch's state_dict -> Linen params -> NNX -> Linen params -> state_dict: the same tensors.
    torch.manual_seed(3)
    state_dict = TorchCNN().state_dict()
    back = params_to_torch({"params": to_linen_params(from_linen_params(params_from_torch(state_dict)["params"]))})
    assert back.keys() == state_dict.keys()
    for name, tensor in state_dict.items():
        assert torch.equal(back[name], tensor), name


def test_wrong_parameters_are_refused_with_the_expected_tree(linen_params):
    wrong = {**linen_params, "fc2": {"kernel": jnp.zeros((256, 9)), "bias": jnp.zeros(9)}}
    with pytest.raises(ValueError, match=r"not the CNN's Linen parameters: expected .*'fc2'.*\(256, 10\).*got"):
        from_linen_params(wrong)


def test_nnx_init_draws_from_torch_default_distributions():
    """U(+-1/sqrt(fan_in)) for weights and biases, as the Linen module and PyTorch."""
    params = to_linen_params(CNN(rngs=nnx.Rngs(0)))
    for layer, fan_in in FAN_IN.items():
        bound = 1 / math.sqrt(fan_in)
        for name in ("kernel", "bias"):
            values = np.asarray(params[layer][name])
            assert np.abs(values).max() <= bound, (layer, name)
            if values.size >= 1000:
                assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.05), (layer, name)


def test_create_model_starts_from_the_linen_trainers_parameters():
    model, _ = steps_nnx.create_model(7, CONFIG)
    linen = jax_steps.create_state(7, CONFIG).params
    for got, want in zip(jax.tree.leaves(to_linen_params(model)), jax.tree.leaves(linen)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_twenty_sgd_steps_of_every_nnx_route_equal_the_linen_steps(jax_mnist):
    """Each route traces the same loss, gradient and optax update as Linen's `train_step` (NNX's split and
    merge move arrays, they compute nothing), so XLA compiles the same arithmetic: measured bit-identical
    losses and parameters after 20 steps on this CPU. Asserted within 1e-6 of each parameter's scale, room
    for another XLA fusing the two programs differently, still far below any real difference (a wrong
    momentum or learning rate moves parameters by 1e-3 relative within a few steps). Batches of 32 keep it
    quick; the arithmetic is the same at any size."""
    linen = jax_steps.create_state(0, CONFIG)  # the same parameters and model form (conv1 as a matmul on the CPU)
    stateful = {name: steps_nnx.create_model(0, CONFIG) for name in ("nnx.jit", "tree mode", "cached_partial")}
    cached = steps_nnx.cached_train_step(*stateful["cached_partial"])
    graphdef, state = steps_nnx.split(*steps_nnx.create_model(0, CONFIG))
    leaves_graphdef, leaves_state = steps_nnx.split(*steps_nnx.create_model(0, CONFIG))
    leaves, treedef = steps_nnx.flatten(leaves_state)
    fused_graphdef, fused = steps_nnx.split(*steps_nnx.create_model(0, CONFIG))
    batches = [
        (jnp.asarray(jax_mnist.train.images[rows]), jnp.asarray(jax_mnist.train.labels[rows]))
        for rows in (slice(step * 32, (step + 1) * 32) for step in range(20))
    ]
    for batch in batches:
        linen, metrics = jax_steps.train_step(linen, batch)
        losses = {
            "nnx.jit": steps_nnx.train_step_nnx_jit(*stateful["nnx.jit"], batch),
            "tree mode": steps_nnx.train_step_nnx_tree(*stateful["tree mode"], batch),
            "cached_partial": cached(batch),
        }
        state, losses["split"] = steps_nnx.train_step_split(graphdef, state, batch)
        leaves, losses["leaves"] = steps_nnx.train_step_leaves(leaves_graphdef, treedef, leaves, batch)
        for route, loss in losses.items():
            assert float(loss) == pytest.approx(float(metrics["loss"]), rel=1e-6, abs=0), route
    stacked = tuple(jnp.stack(parts) for parts in zip(*batches))
    fused, fused_losses = steps_nnx.train_steps_split(fused_graphdef, fused, stacked, unroll=True)
    assert float(fused_losses[-1]) == pytest.approx(float(metrics["loss"]), rel=1e-6, abs=0)
    assert all(int(optimizer.step[...]) == 20 for _, optimizer in stateful.values())
    final = {route: to_linen_params(model) for route, (model, _) in stateful.items()}
    final["split"] = steps_nnx.linen_params(state)
    final["leaves"] = steps_nnx.linen_params(steps_nnx.unflatten(treedef, leaves))
    final["fused split"] = steps_nnx.linen_params(fused)
    for route, params in final.items():
        for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(linen.params)):
            scale = float(jnp.abs(want).max())
            assert float(jnp.abs(got - want).max()) <= 1e-6 * scale, (route, jax.tree_util.keystr(path))
    model_back, optimizer_back = steps_nnx.merge(graphdef, state)
    assert isinstance(model_back, CNN) and int(optimizer_back.step[...]) == 20

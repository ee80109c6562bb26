"""Both CNNs: same topology, same parameter shapes (up to layout), PyTorch's init distributions, clear input errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from mnist_jax import steps as jax_steps
from mnist_jax import train as jax_train
from mnist_jax import tuned as jax_tuned
from mnist_jax.model import CNN as JaxCNN
from mnist_jax.port import params_from_torch
from mnist_torch.model import CNN as TorchCNN

FAN_IN = {"conv1": 1 * 3 * 3, "conv2": 32 * 3 * 3, "fc1": 64 * 7 * 7, "fc2": 256}


@pytest.fixture(scope="module")
def jax_variables():
    """`JaxCNN().init(key(0), ...)`, compiled as one program (`create_state`'s), not op by op."""
    return {"params": jax_tuned.create_state(0, jax_train.TrainConfig()).params}


def test_torch_model_maps_a_batch_to_ten_logits(mnist):
    logits = TorchCNN()(mnist.test.images[:16])
    assert logits.shape == (16, 10) and logits.dtype == torch.float32


def test_jax_model_maps_a_batch_to_ten_logits(jax_variables, jax_mnist):
    logits = JaxCNN().apply(jax_variables, jax_mnist.test.images[:16])
    assert logits.shape == (16, 10) and logits.dtype == jnp.float32


def test_parameter_shapes_match_up_to_layout(jax_variables):
    torch_shapes = jax.tree.map(lambda a: a.shape, params_from_torch(TorchCNN().state_dict()))
    assert torch_shapes == jax.tree.map(lambda a: a.shape, jax_variables)
    assert jax_variables["params"]["conv1"]["kernel"].shape == (3, 3, 1, 32)  # HWIO
    assert jax_variables["params"]["fc1"]["kernel"].shape == (3136, 256)
    assert sum(p.numel() for p in TorchCNN().parameters()) == sum(a.size for a in jax.tree.leaves(jax_variables))


def test_jax_init_draws_from_torch_default_distributions(jax_variables):
    """U(+-1/sqrt(fan_in)) for weights and biases, as nn.Conv2d and nn.Linear's reset_parameters."""
    torch.manual_seed(0)
    torch_params = params_from_torch(TorchCNN().state_dict())["params"]
    for layer, fan_in in FAN_IN.items():
        bound = 1 / math.sqrt(fan_in)
        for name in ("kernel", "bias"):
            for params in (jax_variables["params"], torch_params):
                values = np.asarray(params[layer][name])
                assert np.abs(values).max() <= bound, (layer, name)
                if values.size >= 1000:  # enough draws for the spread to identify the distribution
                    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.05), (layer, name)
                    assert np.abs(values).max() > 0.99 * bound, (layer, name)


def test_torch_model_rejects_a_batch_without_channel_axis():
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 1, 28, 28\).*got shape \(4, 28, 28\)"):
        TorchCNN()(torch.zeros(4, 28, 28))


def test_jax_model_rejects_nchw_batch(jax_variables):
    with pytest.raises(
        ValueError, match=r"expects images of shape \(N, 28, 28, 1\) \(NHWC\).*got shape \(4, 1, 28, 28\)"
    ):
        JaxCNN().apply(jax_variables, jnp.zeros((4, 1, 28, 28)))


def test_train_step_rejects_bad_batches_with_the_expected_shape(jax_variables):
    state = jax_train.TrainState.create(apply_fn=JaxCNN().apply, params=jax_variables["params"], tx=optax.sgd(0.1))
    labels = jnp.zeros(4, jnp.int32)
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\).*got shape \(4, 28, 28\)"):
        jax_steps.train_step(state, (jnp.zeros((4, 28, 28)), labels))
    with pytest.raises(ValueError, match=r"floating point, got shape \(4, 28, 28, 1\) uint8"):
        jax_steps.train_step(state, (jnp.zeros((4, 28, 28, 1), jnp.uint8), labels))
    with pytest.raises(
        ValueError, match=r"labels must be integer class indices of shape \(4,\).*got shape \(4,\) float32"
    ):
        jax_steps.train_step(state, (jnp.zeros((4, 28, 28, 1)), jnp.zeros(4)))
    with pytest.raises(ValueError, match=r"labels must be integer class indices of shape \(4,\).*got shape \(4, 10\)"):
        jax_steps.eval_step(state.params, (jnp.zeros((4, 28, 28, 1)), jnp.zeros((4, 10), jnp.int32)))


def test_cross_entropy_is_the_integer_label_one_without_a_scatter():
    """`cross_entropy` (one-hot) is optax's integer-label cross-entropy in value and gradient, to float32
    rounding, and its gradient holds no scatter, the op XLA:GPU's deterministic mode slows down; optax's does."""
    logits = jax.random.normal(jax.random.key(0), (128, 10)) * 4
    labels = jnp.arange(128) % 10

    def optax_loss(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    np.testing.assert_allclose(jax_steps.cross_entropy(logits, labels), optax_loss(logits, labels), rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(jax.grad(jax_steps.cross_entropy))(logits, labels),
        jax.jit(jax.grad(optax_loss))(logits, labels),
        rtol=0,
        atol=1e-8,
    )
    assert "scatter" not in jax.jit(jax.grad(jax_steps.cross_entropy)).lower(logits, labels).as_text()
    assert "scatter" in jax.jit(jax.grad(optax_loss)).lower(logits, labels).as_text()

"""`--precision bf16`: mixed precision in both trainers, checked against float32 with its own, looser bounds.

bfloat16 keeps 8 bits of mantissa (float32: 24), so bf16 results are not held to the float32 parity
bounds of tests/test_parity.py. Measured on real MNIST, 2-core CPU, with the weights of a trained run:
- logits, largest difference relative to the largest float32 logit: 3.9e-3 (PyTorch autocast),
  5.7e-3 (JAX); predictions agree with float32 on 99.9-100% of 1 000 test images;
- gradients of one batch, as a norm relative to the float32 gradient's: at most 0.108 (PyTorch, fc1)
  and 0.073 (JAX, conv2's bias). Single elements are off by more (up to 0.44 of the largest for
  JAX's conv1 bias, a bfloat16 sum of 100 352 terms), which is why the norm is the measure here.
Training is what has to survive it: after 3 epochs, 99.09% (JAX) and 98.93% (PyTorch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mnist_common.batches import batch_indices
from mnist_common.config import TrainConfig
from mnist_common.weights import WEIGHTS_FILE
from mnist_jax import steps as jax_steps
from mnist_jax import train as jax_train
from mnist_jax.model import CNN as JaxCNN
from mnist_jax.port import params_from_torch
from mnist_torch import train as torch_train
from mnist_torch.weights import load_weights
from tests.numerics import relative_error

LOGITS_BOUND = 2e-2
PREDICTIONS_AGREE = 0.99
GRADS_BOUND = 0.2
TRAINERS = {"torch": torch_train, "jax": jax_train}


def relative_norm_error(expected, actual) -> float:
    """|actual - expected| / |expected| over a whole tensor: how far the step's direction moved, which bf16
    rounding of single elements (a few percent each) does not dominate."""
    expected, actual = np.asarray(expected, np.float32), np.asarray(actual, np.float32)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.fixture(scope="module")
def trained_model(trained_run) -> torch.nn.Module:
    return load_weights(trained_run("torch") / WEIGHTS_FILE, torch.device("cpu"))


def test_bf16_logits_stay_within_the_stated_bound(trained_model, mnist, jax_mnist):
    images = mnist.test.images[:1000]
    with torch.no_grad():
        expected = trained_model(images).numpy()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch_bf16 = trained_model(images).float().numpy()
    jax_bf16 = JaxCNN(dtype=jnp.bfloat16).apply(
        params_from_torch(trained_model.state_dict()), jax_mnist.test.images[:1000]
    )

    assert jax_bf16.dtype == jnp.bfloat16  # the layers really computed in bfloat16
    for actual in (torch_bf16, jax_bf16):
        assert relative_error(expected, actual) < LOGITS_BOUND
        assert (np.asarray(actual).argmax(axis=1) == expected.argmax(axis=1)).mean() >= PREDICTIONS_AGREE
    assert relative_error(expected, jax_bf16) > 1e-4  # not float32 in disguise (float32 parity: 1.7e-7)


def test_bf16_gradients_stay_within_the_stated_bounds(trained_model, mnist, jax_mnist):
    idx = next(batch_indices(0, 2, len(mnist.train.labels), 128))
    images, labels = mnist.train.images[idx], mnist.train.labels[idx]

    def torch_grads(dtype: torch.dtype):
        trained_model.zero_grad()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):  # as mnist_torch.steps.train_step does
            loss = F.cross_entropy(trained_model(images), labels)
        assert loss.dtype == torch.float32
        loss.backward()
        return params_from_torch({name: p.grad.clone() for name, p in trained_model.named_parameters()})["params"]

    expected = torch_grads(torch.float32)
    params = params_from_torch(trained_model.state_dict())["params"]
    jax_images, jax_labels = jax_mnist.train.images[idx], jax_mnist.train.labels[idx]

    def jax_loss(p):
        return jax_steps.cross_entropy(JaxCNN(dtype=jnp.bfloat16).apply({"params": p}, jax_images), jax_labels)

    jax_bf16 = jax.jit(jax.grad(jax_loss))(params)
    for actual in (torch_grads(torch.bfloat16), jax_bf16):
        errors = jax.tree.map(relative_norm_error, expected, actual)
        assert max(jax.tree.leaves(errors)) < GRADS_BOUND, errors
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(jax_bf16))  # float32 gradients for float32 weights


@pytest.mark.e2e  # a longer real run: 100 SGD steps in bfloat16, which the CPU computes slowly
@pytest.mark.parametrize("framework", TRAINERS)
def test_bf16_training_learns_like_float32(framework, tmp_path):
    """The same short run as tests/test_cli.py's float32 one (100 steps, about 90% there), in bf16, evaluated on the
    first 2 000 test images."""
    records = TRAINERS[framework].train(
        TrainConfig(epochs=2, train_size=6400, test_size=2000, precision="bf16", out_dir=tmp_path, quiet=True)
    )
    assert records[-1].train_loss < 0.5 * records[0].train_loss
    assert records[-1].test_accuracy > 0.85


@pytest.mark.gpu  # the device bf16 is for, where 10 epochs take seconds: gpu_run.sh's gpu-tests stage runs it
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
@pytest.mark.parametrize("framework", TRAINERS)
def test_bf16_default_training_reaches_99_percent(framework, tmp_path):
    """The bar for the bf16 mode: >= 99.0% test accuracy with the default 10 epochs (float32 gets there by epoch 3).
    On the CPU, bf16's arithmetic is emulated, slowly: there the e2e test above trains 100 bf16 steps instead."""
    records = TRAINERS[framework].train(TrainConfig(precision="bf16", device="cuda", out_dir=tmp_path, quiet=True))
    assert max(r.test_accuracy for r in records) >= 0.99

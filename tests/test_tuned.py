"""The tuned forms (`mnist_jax.tuned`, `mnist_torch.tuned`) against the lesson's model: the same parameters in, the
same values and gradients out, to the rounding each docstring states."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mnist_jax import steps as jax_steps
from mnist_jax import train as jax_train
from mnist_jax import tuned as jax_tuned
from mnist_jax.model import CNN as JaxCNN
from mnist_jax.tuned import TunedCNN, avg_pool_2x2, conv1_as_matmul
from mnist_torch import tuned as torch_tuned
from mnist_torch.model import CNN as TorchCNN
from mnist_torch.tuned import Conv1AsMatmul
from mnist_torch.tuned import TunedCNN as TorchTunedCNN


@pytest.fixture(scope="module")
def jax_variables():
    return {"params": jax_steps.create_state(0, jax_train.TrainConfig()).params}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_pooling_gradient_is_the_automatic_one(dtype, jax_mnist):
    """`avg_pool_2x2` writes its gradient out (for speed on the CPU); it must be autodiff's gradient of
    nn.avg_pool, bit for bit."""
    with jax.enable_x64(dtype == jnp.float64):
        x = (
            jnp.asarray(jax_mnist.test.images[:8], dtype) * jnp.arange(1, 29, dtype=dtype)[:, None]
        )  # no two windows alike
        weights = jax.random.normal(jax.random.key(1), (8, 14, 14, 1), dtype)
        automatic = jax.grad(lambda x: (nn.avg_pool(x, (2, 2), strides=(2, 2)) * weights).sum())(x)
        written = jax.grad(lambda x: (avg_pool_2x2(x) * weights).sum())(x)
        assert written.dtype == dtype
        np.testing.assert_array_equal(np.asarray(written), np.asarray(automatic))
        np.testing.assert_array_equal(np.asarray(avg_pool_2x2(x)), np.asarray(nn.avg_pool(x, (2, 2), strides=(2, 2))))


def test_conv1_as_matmul_is_nn_conv_in_float64(jax_mnist):
    """`conv1_as_matmul` is the same function as conv1's `nn.Conv`, and its written-out gradient (input,
    kernel, bias) is autodiff's, to float64 rounding: any mistake in the tap order or the padding shows as O(1)."""
    with jax.enable_x64(True):
        x = jnp.asarray(jax_mnist.test.images[:8], jnp.float64)
        conv = nn.Conv(32, (3, 3), padding="SAME", dtype=jnp.float64, param_dtype=jnp.float64)
        params = conv.init(jax.random.key(0), x)["params"]
        weights = jax.random.normal(jax.random.key(1), (8, 28, 28, 32), jnp.float64)

        def reference(x, kernel, bias):
            return (conv.apply({"params": {"kernel": kernel, "bias": bias}}, x) * weights).sum()

        def written(x, kernel, bias):
            return (conv1_as_matmul(x, kernel, bias) * weights).sum()

        args = (x, params["kernel"], params["bias"])
        np.testing.assert_allclose(conv1_as_matmul(*args), conv.apply({"params": params}, x), rtol=1e-12, atol=1e-12)
        for got, want in zip(
            jax.jit(jax.grad(written, argnums=(0, 1, 2)))(*args), jax.jit(jax.grad(reference, argnums=(0, 1, 2)))(*args)
        ):
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_conv1_as_matmul_trains_like_nn_conv_in_float32(jax_variables, jax_mnist):
    """The CPU trainer's model (`conv1_as_matmul=True`) against the default one, on a real batch: the same
    parameters, logits and loss gradients to float32 rounding. Both add the same products in a different
    order, so they differ by a few float32 ulps: measured 2.1e-7 (conv1's bias gradient, a sum over 100 352
    rows, at most 3.4e-7); asserted at 2e-6, headroom for another CPU's blocking."""
    x, labels = jnp.asarray(jax_mnist.train.images[:128]), jnp.asarray(jax_mnist.train.labels[:128])
    matmul = TunedCNN(conv1_as_matmul=True)
    assert jax.tree.structure(jax.eval_shape(matmul.init, jax.random.key(0), x[:1])) == jax.tree.structure(
        jax_variables
    )
    np.testing.assert_allclose(matmul.apply(jax_variables, x), JaxCNN().apply(jax_variables, x), rtol=0, atol=2e-6)

    def grads(model):  # compiled: op by op, autodiff's many small ops each compile apart
        return jax.jit(jax.grad(lambda p: jax_steps.cross_entropy(model.apply({"params": p}, x), labels)))(
            jax_variables["params"]
        )

    for got, want in zip(jax.tree.leaves(grads(matmul)), jax.tree.leaves(grads(JaxCNN()))):
        assert float(jnp.abs(got - want).max()) <= 2e-6 * float(jnp.abs(want).max())


def test_the_accelerators_tuned_model_is_the_lessons_with_the_pooling_gradient_written_out(jax_variables, jax_mnist):
    """`TunedCNN()` (conv1 an `nn.Conv`, the accelerators' form) gives the lesson's logits bit for bit (the same
    forward ops) and its gradients to float32 rounding (the pooling gradient is the automatic one, bit for bit)."""
    x, labels = jnp.asarray(jax_mnist.train.images[:128]), jnp.asarray(jax_mnist.train.labels[:128])
    np.testing.assert_array_equal(TunedCNN().apply(jax_variables, x), JaxCNN().apply(jax_variables, x))

    def grads(model):
        return jax.jit(jax.grad(lambda p: jax_steps.cross_entropy(model.apply({"params": p}, x), labels)))(
            jax_variables["params"]
        )

    for got, want in zip(jax.tree.leaves(grads(TunedCNN())), jax.tree.leaves(grads(JaxCNN()))):
        assert float(jnp.abs(got - want).max()) <= 2e-6 * float(jnp.abs(want).max())


def test_the_trainer_computes_conv1_as_a_matmul_on_the_cpu_only():
    state = jax_tuned.create_state(0, jax_train.TrainConfig(), jax.devices("cpu")[0])
    assert state.apply_fn.__self__.conv1_as_matmul is True
    assert jax_tuned.create_state(0, jax_train.TrainConfig()).apply_fn.__self__.conv1_as_matmul is (
        jax.default_backend() == "cpu"
    )


def test_torch_conv1_as_matmul_is_conv2d_in_float64(mnist):
    """PyTorch's `Conv1AsMatmul` (`--mode compile-step`'s CPU model) is `nn.Conv2d`'s function, and its written-out
    kernel and bias gradients are autograd's, to float64 rounding; it refuses an input gradient it does not compute."""
    torch.manual_seed(0)
    model = TorchCNN().double()
    x = mnist.test.images[:8].double()
    weights = torch.randn(8, 32, 28, 28, dtype=torch.float64)
    want = model.conv1(x)
    got = Conv1AsMatmul.apply(x, model.conv1.weight, model.conv1.bias)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    want_grads = torch.autograd.grad((want * weights).sum(), (model.conv1.weight, model.conv1.bias))
    got_grads = torch.autograd.grad((got * weights).sum(), (model.conv1.weight, model.conv1.bias))
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-11, atol=1e-11)
    with pytest.raises(NotImplementedError, match="no gradient for its input"):
        Conv1AsMatmul.apply(x.requires_grad_(), model.conv1.weight, model.conv1.bias).sum().backward()


def test_torch_conv1_as_matmul_trains_like_conv2d_in_float32(mnist):
    """`TunedCNN` (conv1 as a matmul) against the lesson's model with the same parameters, on a real batch, each
    measured against the float64 model: logits and loss gradients within float32 rounding. Measured (Intel Xeon): logits
    6.0e-8 apart; the largest gradient error relative to its tensor's scale 4.5e-6 for the matmul form (conv2's
    bias; conv1's 6.9e-7) and 8.9e-6 for nn.Conv2d's (conv1's bias), so the matmul form is the more exact."""
    torch.manual_seed(0)
    plain, matmul, exact = TorchCNN(), TorchTunedCNN(), TorchCNN().double()
    matmul.load_state_dict(plain.state_dict())
    exact.load_state_dict(plain.state_dict())
    x, labels = mnist.train.images[:128], mnist.train.labels[:128]
    torch.testing.assert_close(matmul(x), plain(x), rtol=0, atol=1e-6)
    for model, images in ((plain, x), (matmul, x), (exact, x.double())):
        torch.nn.functional.cross_entropy(model(images), labels).backward()
    for got, reference in zip(matmul.parameters(), exact.parameters(), strict=True):
        assert float((got.grad.double() - reference.grad).abs().max()) <= 2e-5 * float(reference.grad.abs().max())


def test_pytorch_computes_conv1_as_a_matmul_in_compile_step_on_the_cpu_only():
    cpu = torch.device("cpu")
    for mode, expected in (("eager", False), ("compile", False), ("compile-step", True), ("cuda-graphs", False)):
        state = torch_tuned.create_state(0, jax_train.TrainConfig(mode=mode), cpu)
        assert isinstance(state.model, TorchTunedCNN) is expected, mode
    assert torch_tuned.conv1_as_matmul_on("compile-step", torch.device("cuda")) is False

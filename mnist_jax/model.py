"""The reference CNN in Flax Linen, layer for layer the same as `mnist_torch.model.CNN`.

Differences from the PyTorch module, all of them conventions rather than maths:
- layout NHWC (Flax/XLA) instead of NCHW, so kernels are HWIO instead of OIHW;
- `flatten` before the first dense layer orders features (h, w, c), not (c, h, w):
  `mnist_jax.port` permutes fc1's weights accordingly;
- the initializers are written out to draw from PyTorch's default distributions
  (kaiming-uniform with a=sqrt(5), i.e. U(+-1/sqrt(fan_in)), for weights and biases),
  so both frameworks learn alike from scratch.
`CNN().apply(variables, x)` is a pure function of the parameters and the batch.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

INPUT_SHAPE = (28, 28, 1)  # (H, W, C) of one image

#: kaiming_uniform(a=sqrt(5)) has bound gain*sqrt(3/fan_in) with gain^2 = 2/(1+5) = 1/3,
#: which is variance scaling 1/3 over fan_in, uniform: U(+-1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default bias init, U(+-1/sqrt(fan_in)); Flax bias initializers do not see fan_in."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(features: int, in_channels: int, name: str, dtype: Any) -> nn.Conv:
    return nn.Conv(
        features,
        (3, 3),
        padding="SAME",
        name=name,
        dtype=dtype,
        kernel_init=torch_kernel_init,
        bias_init=torch_bias_init(in_channels * 3 * 3),
    )


def dense(features: int, in_features: int, name: str, dtype: Any) -> nn.Dense:
    return nn.Dense(
        features, name=name, dtype=dtype, kernel_init=torch_kernel_init, bias_init=torch_bias_init(in_features)
    )


@jax.custom_vjp
def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 average pooling with stride 2, `F.avg_pool2d(x, 2)`, with its gradient written out.

    The forward pass is Flax's `nn.avg_pool`. Its automatic gradient is a padded reduce-window,
    which made training steps slower on the CPU (see benchmarks/RESULTS.md, "Design measurements");
    the 2x2 windows do not overlap, so the exact gradient is each output's cotangent spread evenly
    over its window (benchmarks/RESULTS.md, "Pooling: the gradient written out").
    tests/test_model.py checks it equals the automatic one.
    """
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _avg_pool_2x2_fwd(x: jax.Array) -> tuple[jax.Array, None]:
    return avg_pool_2x2(x), None


def _avg_pool_2x2_bwd(_: None, cotangent: jax.Array) -> tuple[jax.Array]:
    return (jnp.repeat(jnp.repeat(cotangent, 2, axis=1), 2, axis=2) / 4,)


avg_pool_2x2.defvjp(_avg_pool_2x2_fwd, _avg_pool_2x2_bwd)


def _patches(x: jax.Array) -> jax.Array:
    """The 3x3 neighbourhoods of a one-channel image batch (N, H, W, 1), zero-padded ("SAME"), as rows of
    (N * H * W, 10): the nine taps in the kernel's (kh, kw) order, then a column of ones for the bias."""
    n, h, w, _ = x.shape
    padded = jnp.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    taps = [padded[:, dh : dh + h, dw : dw + w] for dh in range(3) for dw in range(3)]
    return jnp.stack([*taps, jnp.ones_like(taps[0])], axis=-1).reshape(n * h * w, 10)


@jax.custom_vjp
def conv1_as_matmul(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """A 3x3 "SAME" convolution of a one-channel batch, `nn.Conv`'s, as one matmul: [patches | 1] x [kernel; bias].

    Why: conv1 has one input channel, so XLA:CPU's convolution kernels and its bias-gradient reduction run it
    poorly; as a matmul, the kernel and bias gradients are one more matmul, patches^T x cotangent, and the
    column of ones keeps the bias's sum blocked as accurately as the kernel's (benchmarks/RESULTS.md, "conv1 as
    one matmul"). The trainer uses it on the CPU (`CNN.conv1_as_matmul`); tests/test_model.py checks values and
    gradients against `nn.Conv`'s.
    """
    return _conv1_as_matmul_fwd(x, kernel, bias)[0]


def _conv1_as_matmul_fwd(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> tuple[jax.Array, tuple]:
    patches = _patches(x)
    weights = jnp.concatenate([kernel.reshape(9, -1), bias[None]])
    return (patches @ weights).reshape(*x.shape[:3], -1), (x, patches, weights)


def _conv1_as_matmul_bwd(saved: tuple, cotangent: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x, patches, weights = saved
    rows = cotangent.reshape(patches.shape[0], -1)
    both = patches.T @ rows  # (10, features): the kernel's nine rows, then the bias's
    _, patches_vjp = jax.vjp(_patches, x)  # the input's gradient; XLA drops it when, as in training, nothing uses it
    (x_grad,) = patches_vjp((rows @ weights.T).at[:, 9].set(0))
    return x_grad, both[:9].reshape(3, 3, 1, -1), both[9]


conv1_as_matmul.defvjp(_conv1_as_matmul_fwd, _conv1_as_matmul_bwd)


class Conv1AsMatmul(nn.Module):
    """`conv(features, 1, ...)`'s parameters (same names, shapes and initializers), computed by `conv1_as_matmul`."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", torch_kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", torch_bias_init(x.shape[-1] * 3 * 3), (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv1_as_matmul(x, kernel, bias)


def relu(x: jax.Array) -> jax.Array:
    """`F.relu`, NaN included: a NaN input gives NaN, as in PyTorch.

    `nn.relu` is `max(x, 0)`, and XLA:CPU's YNNPACK fusions (jaxlib 0.10's default for inference)
    compute it with the processor's max instruction, which returns 0 for a NaN: weights holding a
    NaN then gave finite logits (and a plausible "accuracy", see benchmarks/RESULTS.md, "Design
    measurements") where PyTorch gives NaN. Adding `0 * x` (0 for every finite x, NaN for a NaN)
    keeps the NaN, at no measurable cost; the value and the gradient
    are otherwise relu's, bit for bit. An infinite activation becomes NaN instead of staying
    infinite: non-finite either way. tests/test_divergence.py plants a NaN in every layer.
    """
    return jnp.maximum(x, 0) + 0 * x


class CNN(nn.Module):
    #: What the layers compute in: None (Flax's default) follows the inputs and parameters, float32 or,
    #: in the float64 parity tests, float64; jnp.bfloat16 for mixed precision. Parameters keep their dtype.
    dtype: Any = None
    #: conv1 as `conv1_as_matmul` instead of `nn.Conv`: the same parameters and, to float32 rounding, the same
    #: values and gradients; the trainer's choice on the CPU, where it trains faster (`mnist_jax.steps.create_state`).
    conv1_as_matmul: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x)
        if self.conv1_as_matmul:
            x = Conv1AsMatmul(32, self.dtype, name="conv1")(x)
        else:
            x = conv(32, x.shape[-1], "conv1", self.dtype)(x)
        x = avg_pool_2x2(relu(x))
        x = avg_pool_2x2(relu(conv(64, x.shape[-1], "conv2", self.dtype)(x)))
        x = x.reshape((x.shape[0], -1))  # NHWC order: channel-minor
        x = relu(dense(256, x.shape[-1], "fc1", self.dtype)(x))
        return dense(10, x.shape[-1], "fc2", self.dtype)(x)


def check_images(x: jax.Array) -> None:
    """Fail at trace time with a message naming the expected batch, not an XLA shape error."""
    if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"CNN expects images of shape (N, {', '.join(map(str, INPUT_SHAPE))}) (NHWC) as floating point, "
            f"got shape {tuple(x.shape)} {x.dtype}; "
            "use mnist_jax.data.load_mnist() or add the channel axis with x[..., None]"
        )


@jax.jit
def init_params(key: jax.Array) -> Any:
    """Linen's init as one compiled program: run op by op, it compiled each of its operations apart, the
    slowest part of a trainer's start-up; the same values either way (the same random bits, scaled alike)."""
    return CNN().init(key, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]

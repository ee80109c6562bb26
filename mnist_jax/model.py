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

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x)
        x = avg_pool_2x2(relu(conv(32, x.shape[-1], "conv1", self.dtype)(x)))
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

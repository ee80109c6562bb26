"""The original project's CNN in Flax Linen, from stock layers, layer for layer `mnist_torch.model.CNN`.

The differences are conventions, not maths: NHWC layout (kernels HWIO), `flatten` in (h, w, c) order
(`mnist_jax.port` permutes fc1 for PyTorch), and initializers that draw from PyTorch's default distributions.
The trainer's faster forms of the same CNN are `mnist_jax.tuned`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

INPUT_SHAPE = (28, 28, 1)  # (H, W, C) of one image

#: PyTorch's kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's bias init, U(+-1/sqrt(fan_in)): Flax's bias initializers do not see fan_in."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def conv(features: int, in_channels: int, name: str, dtype: Any) -> nn.Conv:
    init = {"kernel_init": torch_kernel_init, "bias_init": torch_bias_init(in_channels * 3 * 3)}
    return nn.Conv(features, (3, 3), padding="SAME", name=name, dtype=dtype, **init)


def dense(features: int, in_features: int, name: str, dtype: Any) -> nn.Dense:
    init = {"kernel_init": torch_kernel_init, "bias_init": torch_bias_init(in_features)}
    return nn.Dense(features, name=name, dtype=dtype, **init)


def relu(x: jax.Array) -> jax.Array:
    """`F.relu`, a NaN kept as NaN: XLA:CPU's fused max would turn it into 0 and hide a diverged model."""
    return jnp.maximum(x, 0) + 0 * x


class CNN(nn.Module):
    dtype: Any = None  # what the layers compute in: None follows the inputs; jnp.bfloat16 for mixed precision

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x)
        x = nn.avg_pool(relu(conv(32, x.shape[-1], "conv1", self.dtype)(x)), (2, 2), strides=(2, 2))
        x = nn.avg_pool(relu(conv(64, x.shape[-1], "conv2", self.dtype)(x)), (2, 2), strides=(2, 2))
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

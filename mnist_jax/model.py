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
        features, (3, 3), padding="SAME", name=name, dtype=dtype,
        kernel_init=torch_kernel_init, bias_init=torch_bias_init(in_channels * 3 * 3),
    )


def dense(features: int, in_features: int, name: str, dtype: Any) -> nn.Dense:
    return nn.Dense(features, name=name, dtype=dtype, kernel_init=torch_kernel_init, bias_init=torch_bias_init(in_features))


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 average pooling with stride 2, `F.avg_pool2d(x, 2)`, as a reshape and a mean.

    The same sums as `nn.avg_pool(x, (2, 2), strides=(2, 2))` (identical logits), but its gradient
    is a plain broadcast instead of the padded reduce-window XLA builds for `nn.avg_pool`, which
    made training steps ~5-10% faster on 2 CPU cores (benchmarks/RESULTS.md).
    """
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class CNN(nn.Module):
    dtype: Any = jnp.float32  # what the layers compute in; bfloat16 for mixed precision. Parameters stay float32.

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x)
        x = avg_pool_2x2(nn.relu(conv(32, x.shape[-1], "conv1", self.dtype)(x)))
        x = avg_pool_2x2(nn.relu(conv(64, x.shape[-1], "conv2", self.dtype)(x)))
        x = x.reshape((x.shape[0], -1))  # NHWC order: channel-minor
        x = nn.relu(dense(256, x.shape[-1], "fc1", self.dtype)(x))
        return dense(10, x.shape[-1], "fc2", self.dtype)(x)


def check_images(x: jax.Array) -> None:
    """Fail at trace time with a message naming the expected batch, not an XLA shape error."""
    if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"CNN expects images of shape (N, {', '.join(map(str, INPUT_SHAPE))}) (NHWC) as floating point, "
            f"got shape {tuple(x.shape)} {x.dtype}; use mnist_jax.data.load_mnist() or add the channel axis with x[..., None]"
        )

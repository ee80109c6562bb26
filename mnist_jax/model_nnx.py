"""The reference CNN in Flax NNX, layer for layer `mnist_jax.model.CNN` (Linen), with the same parameters.

Flax's own MNIST example is written in NNX, so this is the module a newcomer to Flax writes today. The Linen
module stays the trainer's pure-functional mirror; this one is checked against it (tests/test_nnx.py):
- the same layers, shared with Linen where they are plain functions (`avg_pool_2x2`, `relu`, `check_images`),
  and PyTorch's default init distributions (the same initializers);
- the same parameter tree, `{"conv1": {"kernel", "bias"}, ...}` in the same layouts, so `to_linen_params` and
  `from_linen_params` convert exactly, and through `mnist_jax.port`, to and from PyTorch's `state_dict`;
- the same logits, bit for bit, from the same parameters.
A NNX module is a mutable Python object: its parameters are attributes, updated in place by `nnx.Optimizer`.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from mnist_jax.model import check_images, relu, torch_bias_init, torch_kernel_init
from mnist_jax.tuned import avg_pool_2x2, conv1_as_matmul


class CNN(nnx.Module):
    """Two 3x3 convolutions, each with ReLU and 2x2 average pooling, then two dense layers: NHWC, like Linen's."""

    def __init__(self, *, rngs: nnx.Rngs, dtype: Any = None, conv1_as_matmul: bool = False) -> None:
        def conv(in_features: int, out_features: int) -> nnx.Conv:
            return nnx.Conv(
                in_features,
                out_features,
                (3, 3),
                padding="SAME",
                dtype=dtype,
                kernel_init=torch_kernel_init,
                bias_init=torch_bias_init(in_features * 3 * 3),
                rngs=rngs,
            )

        def dense(in_features: int, out_features: int) -> nnx.Linear:
            return nnx.Linear(
                in_features,
                out_features,
                dtype=dtype,
                kernel_init=torch_kernel_init,
                bias_init=torch_bias_init(in_features),
                rngs=rngs,
            )

        #: conv1 computed by `mnist_jax.model.conv1_as_matmul` from its `nnx.Conv`'s parameters: as the Linen
        #: module's option of the same name, the trainer's choice on the CPU.
        self.conv1_as_matmul = conv1_as_matmul
        self.dtype = dtype
        self.conv1 = conv(1, 32)
        self.conv2 = conv(32, 64)
        self.fc1 = dense(64 * 7 * 7, 256)
        self.fc2 = dense(256, 10)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x)
        if self.conv1_as_matmul:
            x = conv1_as_matmul(*promote_dtype((x, self.conv1.kernel[...], self.conv1.bias[...]), dtype=self.dtype))
        else:
            x = self.conv1(x)
        x = avg_pool_2x2(relu(x))
        x = avg_pool_2x2(relu(self.conv2(x)))
        x = x.reshape((x.shape[0], -1))  # NHWC order: channel-minor, as in Linen
        x = relu(self.fc1(x))
        return self.fc2(x)


def to_linen_params(model: CNN) -> dict[str, Any]:
    """The module's parameters as Linen's `params` tree (the same arrays, not copies)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def from_linen_params(params: dict[str, Any], dtype: Any = None, conv1_as_matmul: bool = False) -> CNN:
    """A module holding Linen's `params` (e.g. `mnist_jax.model.CNN().init(...)["params"]`), computing in `dtype`.

    The module is built abstractly (`nnx.eval_shape`, no random draws) and then given the arrays, so the
    conversion is exact and costs no initialization."""
    model = nnx.eval_shape(lambda: CNN(rngs=nnx.Rngs(0), dtype=dtype, conv1_as_matmul=conv1_as_matmul))
    state = nnx.state(model, nnx.Param)
    expected, given = (jax.tree.map(_shape_and_dtype, tree) for tree in (nnx.to_pure_dict(state), params))
    if given != expected:
        raise ValueError(
            f"these are not the CNN's Linen parameters: expected shapes and dtypes {expected}, got {given}; "
            f"pass mnist_jax.model.CNN().init(...)['params'] or mnist_jax.port.params_from_torch(...)"
        )
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    return model


def _shape_and_dtype(leaf: Any) -> tuple[Any, str]:
    return getattr(leaf, "shape", None), str(getattr(leaf, "dtype", type(leaf).__name__))

"""The original project's CNN: two convolutions, then two fully connected layers.

Topology (that of the flax and PyTorch MNIST examples, without dropout, so that
`mnist_jax.model.CNN` can reproduce the maths exactly):
conv 3x3 -> 32, ReLU, 2x2 average pool; conv 3x3 -> 64, ReLU, 2x2 average pool;
flatten; dense -> 256, ReLU; dense -> 10 logits. Layout NCHW, PyTorch's native one.

`CNN(conv1_as_matmul=True)` computes conv1 as one matmul of 3x3 patches, `mnist_jax.model`'s CPU form: the same
parameters and, to float32 rounding, the same values and gradients; `--mode compile-step` trains it on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

INPUT_SHAPE = (1, 28, 28)  # (C, H, W) of one image


def _patches(x: torch.Tensor) -> torch.Tensor:
    """The 3x3 neighbourhoods of a one-channel batch (N, 1, H, W), zero-padded, as rows of (N * H * W, 10): the nine
    taps in the kernel's (kh, kw) order, then a column of ones for the bias (`mnist_jax.model._patches`'s)."""
    n, _, h, w = x.shape
    padded = F.pad(x[:, 0], (1, 1, 1, 1))
    taps = [padded[:, dh : dh + h, dw : dw + w] for dh in range(3) for dw in range(3)]
    return torch.stack([*taps, torch.ones_like(taps[0])], dim=-1).reshape(n * h * w, 10)


class Conv1AsMatmul(torch.autograd.Function):
    """A 3x3, padding-1 convolution of a one-channel batch, `nn.Conv2d`'s, as one matmul: [patches | 1] x [kernel;
    bias], with its gradient written out (the kernel's and the bias's in one more matmul), as `mnist_jax.model`'s.
    The output is laid out channels-last (NHWC memory, NCHW shape), which the matmul gives for free and the next
    layers keep.

    Why: with one input channel, oneDNN's convolution and its separate bias-gradient reduction leave most of the
    work to memory passes; see benchmarks/RESULTS.md, "Tuning ledger", for where this form helps and where it
    does not. The input's gradient is not computed: the images need none.
    """

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        weights = torch.cat([weight.reshape(-1, 9).t(), bias[None]])  # (10, features)
        return (_patches(x) @ weights).reshape(n, h, w, -1).permute(0, 3, 1, 2)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # torch.func needs forward and setup_context apart
        x, weight, _ = inputs
        ctx.save_for_backward(x)
        ctx.weight_shape = weight.shape

    @staticmethod
    def backward(ctx, cotangent: torch.Tensor):
        if ctx.needs_input_grad[0]:
            raise NotImplementedError("conv1_as_matmul computes no gradient for its input (the images need none)")
        (x,) = ctx.saved_tensors
        rows = cotangent.permute(0, 2, 3, 1).reshape(-1, cotangent.shape[1])  # (N * H * W, features)
        both = _patches(x).t() @ rows  # (10, features): the kernel's nine taps, then the bias
        return None, both[:9].t().reshape(ctx.weight_shape), both[9]


class CNN(nn.Module):
    def __init__(self, conv1_as_matmul: bool = False) -> None:
        super().__init__()
        #: conv1 through `Conv1AsMatmul` instead of `nn.Conv2d`'s kernel: the same parameters, the CPU's fast form.
        self.conv1_as_matmul = conv1_as_matmul
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        if self.conv1_as_matmul:
            x = Conv1AsMatmul.apply(x, self.conv1.weight, self.conv1.bias)
        else:
            x = self.conv1(x)
        x = F.avg_pool2d(F.relu(x), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)  # NCHW order: channel-major
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def check_images(x: torch.Tensor) -> None:
    """Fail with a message naming the expected batch, not a deep shape error from a layer."""
    if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE or not x.is_floating_point():
        raise ValueError(
            f"CNN expects images of shape (N, {', '.join(map(str, INPUT_SHAPE))}) (NCHW) as floating point, "
            f"got shape {tuple(x.shape)} {x.dtype}; "
            "use mnist_torch.data.load_mnist() or add the channel axis with x.unsqueeze(1)"
        )

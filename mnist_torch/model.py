"""The original project's CNN, from stock layers: two convolutions, then two fully connected layers.

conv 3x3 -> 32, ReLU, 2x2 average pool; conv 3x3 -> 64, ReLU, 2x2 average pool; flatten; dense -> 256, ReLU;
dense -> 10 logits (the flax and PyTorch MNIST examples' topology, without dropout). Layout NCHW, PyTorch's own.
The trainer's faster forms of the same CNN are `mnist_torch.tuned`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

INPUT_SHAPE = (1, 28, 28)  # (C, H, W) of one image


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
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

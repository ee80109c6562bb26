"""The same MNIST arrays as `mnist_torch.data`, laid out for JAX.

Not a second loader: this converts the very tensors that torchvision loaded and
`mnist_torch.data` verified and normalized. The only change is the layout, NCHW ->
NHWC (XLA's and Flax's convention for convolutions), and int32 labels (JAX's default
integer width). The batch order is both trainers' own: `mnist_common.batches`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mnist_common.config import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from mnist_torch import data as torch_data


class Split(NamedTuple):
    """One split as whole arrays: images (N, 28, 28, 1) float32, normalized; labels (N,) int32."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class MNISTData:
    train: Split
    test: Split


def from_torch(split: torch_data.Split) -> Split:
    images = np.ascontiguousarray(split.images.permute(0, 2, 3, 1).numpy())
    return Split(images, split.labels.numpy().astype(np.int32))


def load_mnist(data_dir: Path | str = DEFAULT_DATA_DIR) -> MNISTData:
    """Verified, normalized MNIST as NumPy arrays in NHWC layout."""
    # Imported here, not above: a JAX command that loads no data (predict) then imports no PyTorch.
    from mnist_torch import data as torch_data

    data = torch_data.load_mnist(data_dir)
    return MNISTData(train=from_torch(data.train), test=from_torch(data.test))

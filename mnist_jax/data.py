"""The same MNIST arrays as `mnist_torch.data`, laid out for JAX.

Not a second loader: this converts the very tensors that torchvision loaded and
`mnist_torch.data` verified and normalized. The only change is the layout, NCHW ->
NHWC (XLA's and Flax's convention for convolutions), and int32 labels (JAX's default
integer width). The batch order is both trainers' own: `mnist_common.batches`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

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


def check_labels(images: Any, labels: Any) -> None:
    """The batch check every step traces (shapes and dtypes are static at trace time), so that a bad batch
    fails in Python, not in XLA."""
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integer class indices of shape ({images.shape[0]},) to match the images, "
            f"got shape {tuple(labels.shape)} {labels.dtype}; use mnist_jax.data.load_mnist()"
        )

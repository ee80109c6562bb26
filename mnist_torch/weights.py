"""Trained weights of the PyTorch CNN in the shared safetensors file (`mnist_common.weights`).

Read it side by side with `mnist_jax/weights.py`: the same functions. The file's layout is this
model's own ``state_dict``, so nothing is converted, only moved between devices and NumPy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mnist_common.weights import WEIGHTS_FILE, WeightsError, read_weights, write_weights  # noqa: F401  (re-exported)
from mnist_torch.model import CNN


def export_weights(model: CNN, path: Path) -> Path:
    # contiguous: `--mode compile-step` trains in channels-last memory; the file holds PyTorch's default layout
    return write_weights(path, {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()})


def load_weights(path: Path, device: torch.device) -> CNN:
    """A CNN holding the file's weights, ready to evaluate."""
    model = CNN()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in read_weights(path).items()})
    return model.to(device).eval()

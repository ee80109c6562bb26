"""Trained weights in a framework-neutral file: safetensors, in PyTorch's ``state_dict`` names and layouts.

Read it side by side with `mnist_torch/weights.py`: the same functions. The file format is
the reference's, so the Flax parameters are converted on the way out and in with
`mnist_jax.port` (HWIO <-> OIHW kernels, transposed dense weights, fc1's rows permuted);
only transposes and reshapes are involved, so an exported file loads back bit-exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import torch

from mnist_common.weights import WEIGHTS_FILE, WeightsError, read_weights, write_weights  # noqa: F401  (re-exported)
from mnist_jax.port import params_from_torch, params_to_torch


def export_weights(params: Any, path: Path) -> Path:
    return write_weights(path, {k: v.numpy() for k, v in params_to_torch({"params": params}).items()})


def load_weights(path: Path, device: jax.Device) -> Any:
    """The file's weights as Flax params on ``device``, ready to evaluate."""
    state_dict = {k: torch.from_numpy(np.asarray(v)) for k, v in read_weights(path).items()}
    return jax.device_put(params_from_torch(state_dict)["params"], device)

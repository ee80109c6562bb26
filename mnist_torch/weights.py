"""Trained weights in a framework-neutral file: safetensors, in PyTorch's ``state_dict`` names and layouts.

PyTorch is the reference, so the interchange format is its ``state_dict`` (``conv1.weight``
as (O, I, H, W), ``fc1.weight`` as (out, in) over channel-major inputs, ...); the JAX side
converts on the way in and out with `mnist_jax.port` (see `mnist_jax/weights.py`, the mirror).
safetensors holds plain arrays and nothing executable, so a file from anywhere is safe to load.

`read_weights` and `write_weights` work on NumPy arrays and are shared by both frameworks:
the names and shapes are checked once, here, against the reference model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from mnist_torch.divergence import non_finite
from mnist_torch.files import write_atomically
from mnist_torch.model import CNN

#: The name of the file each trainer writes into its out-dir at the end.
WEIGHTS_FILE = "weights.safetensors"


class WeightsError(RuntimeError):
    """The file is not this CNN's weights; the message says what differs."""


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the reference CNN's state_dict (built on the meta device: no memory, no RNG)."""
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in CNN().state_dict().items()}


def write_weights(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write atomically: a crash never leaves a half-written file under the final name."""
    payload = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()})
    return write_atomically(path, lambda partial: partial.write_bytes(payload))


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, checked against the CNN's names and shapes, all finite."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist; export weights with a training run (it writes <out-dir>/{WEIGHTS_FILE})")
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path} is not a safetensors file ({err}); pass a {WEIGHTS_FILE} written by a training run") from None
    expected = expected_shapes()
    got = {name: tuple(a.shape) for name, a in arrays.items()}
    if got != expected:
        wrong = sorted(set(expected) ^ set(got)) or sorted(k for k in expected if got[k] != expected[k])
        details = ", ".join(f"{k} {got.get(k, 'missing')} (expected {expected.get(k, 'none')})" for k in wrong)
        raise WeightsError(
            f"{path} does not hold this CNN's weights in PyTorch state_dict layout: {details}; "
            f"export them with this project (a training run writes <out-dir>/{WEIGHTS_FILE})"
        )
    if bad := non_finite(arrays):
        raise WeightsError(
            f"{path} holds NaN or infinite values in {', '.join(bad)}: the weights of a diverged run, which would "
            f"predict nonsense; train again with a lower --lr, or pass another file"
        )
    return arrays


def export_weights(model: CNN, path: Path) -> Path:
    return write_weights(path, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def load_weights(path: Path, device: torch.device) -> CNN:
    """A CNN holding the file's weights, ready to evaluate."""
    model = CNN()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in read_weights(path).items()})
    return model.to(device).eval()

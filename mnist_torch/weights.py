"""Trained weights in a framework-neutral file: safetensors, in PyTorch's ``state_dict`` names and layouts.

PyTorch is the reference, so the interchange format is its ``state_dict`` (``conv1.weight``
as (O, I, H, W), ``fc1.weight`` as (out, in) over channel-major inputs, ...); the JAX side
converts on the way in and out with `mnist_jax.port` (see `mnist_jax/weights.py`, the mirror).
safetensors holds plain arrays and nothing executable, so a file from anywhere is safe to load.

`read_weights` and `write_weights` work on NumPy arrays and are shared by both frameworks:
the names, shapes and dtypes are checked once, here, against the reference model (integer and
boolean tensors are refused; float16, bfloat16 and float64 ones are converted to float32, with a note).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from mnist_torch.cli import file_problem
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


#: safetensors' names of the floating-point dtypes that `read_weights` converts to float32, with a note.
CONVERTED_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F64": "float64"}
#: safetensors' dtype names as NumPy and PyTorch spell them, for messages (others are shown lower-cased).
_DTYPE_NAMES = {"BOOL": "bool", "F32": "float32", **CONVERTED_DTYPES,
                **{f"{kind}{bits}": f"{name}{bits}" for kind, name in (("I", "int"), ("U", "uint")) for bits in (8, 16, 32, 64)}}


def _load_float32(path: Path) -> dict[str, np.ndarray]:
    """The file's tensors as float32 arrays. Integer and boolean tensors (or any other non-float) are refused,
    naming them: cast to float they would evaluate to a plausible-looking 9.80%. float16, bfloat16 and float64
    ones are converted, with one note on stderr, since they hold weights in another precision."""
    with safe_open(str(path), framework="pt") as file:
        names = file.keys()  # a safe_open handle: not a dict, not iterable
        dtypes = {name: file.get_slice(name).get_dtype() for name in names}
        refused = [f"{name} ({_DTYPE_NAMES.get(dtype, dtype.lower())})" for name, dtype in sorted(dtypes.items())
                   if dtype != "F32" and dtype not in CONVERTED_DTYPES]
        if refused:
            shown = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
            raise WeightsError(
                f"{path} holds tensors that are not floating-point weights: {shown}; expected float32 (float16, "
                f"bfloat16 and float64 are converted); export them with this project (a training run writes "
                f"<out-dir>/{WEIGHTS_FILE})"
            )
        tensors = {name: file.get_tensor(name) for name in names}
    if converted := sorted({CONVERTED_DTYPES[dtype] for dtype in dtypes.values() if dtype in CONVERTED_DTYPES}):
        count = sum(dtype in CONVERTED_DTYPES for dtype in dtypes.values())
        print(f"note: {path} holds {' and '.join(converted)} weights ({count} of {len(dtypes)} tensors); "
              f"converted to float32", file=sys.stderr, flush=True)
    return {name: tensor.to(torch.float32).numpy() for name, tensor in tensors.items()}


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, float32 (`_load_float32`), checked against the CNN's names and
    shapes, all finite. A path that is not a regular file (a FIFO, a device) is refused without opening it."""
    path = Path(path)
    if (problem := file_problem(path)) is not None:
        raise WeightsError(f"{path} {problem}; export weights with a training run (it writes <out-dir>/{WEIGHTS_FILE})")
    try:
        arrays = _load_float32(path)
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

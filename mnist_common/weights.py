"""Trained weights in a framework-neutral file: safetensors, in PyTorch's ``state_dict`` names and layouts.

PyTorch is the reference, so the interchange format is its ``state_dict`` (``conv1.weight``
as (O, I, H, W), ``fc1.weight`` as (out, in) over channel-major inputs, ...); each framework's
``weights.py`` converts its model to and from these NumPy arrays (the JAX side with `mnist_jax.port`).
safetensors holds plain arrays and nothing executable, so a file from anywhere is safe to load.

`read_weights` and `write_weights` work on NumPy arrays and are shared by both frameworks:
the names, shapes and dtypes are checked once, here, against the reference model (integer and
boolean tensors are refused; float16, bfloat16 and float64 ones are converted to float32, with a note).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from mnist_common.cli import file_problem
from mnist_common.divergence import non_finite
from mnist_common.errors import ProjectError
from mnist_common.files import write_atomically
from mnist_common.outdir import WEIGHTS_FILE  # noqa: F401  (the file each trainer writes at the end)


class WeightsError(ProjectError, RuntimeError):
    """The file is not this CNN's weights; the message says what differs."""


#: Names and shapes of the reference CNN's ``state_dict`` (`mnist_torch.model.CNN`; tests/test_weights.py checks
#: that the model and this table agree), so that reading a file needs no framework.
EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (32, 1, 3, 3),
    "conv1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3),
    "conv2.bias": (64,),
    "fc1.weight": (256, 3136),
    "fc1.bias": (256,),
    "fc2.weight": (10, 256),
    "fc2.bias": (10,),
}


def write_weights(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write atomically: a crash never leaves a half-written file under the final name."""
    payload = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()})
    return write_atomically(path, lambda partial: partial.write_bytes(payload))


#: safetensors' names of the floating-point dtypes that `read_weights` converts to float32, with a note.
CONVERTED_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F64": "float64"}
#: safetensors' dtype names as NumPy and PyTorch spell them, for messages (others are shown lower-cased).
_DTYPE_NAMES = {
    "BOOL": "bool",
    "F32": "float32",
    **CONVERTED_DTYPES,
    **{f"{kind}{bits}": f"{name}{bits}" for kind, name in (("I", "int"), ("U", "uint")) for bits in (8, 16, 32, 64)},
}


def _bfloat16(path: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor as float32, which NumPy cannot name: the file's raw 16-bit words are the top halves of
    float32 words. safetensors' layout: an 8-byte little-endian header length, a JSON header, then the data."""
    with open(path, "rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
        entry = json.loads(file.read(header_length))[name]
        begin, end = entry["data_offsets"]
        file.seek(8 + header_length + begin)
        words = np.frombuffer(file.read(end - begin), dtype="<u2")
    return (words.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def _load_float32(path: Path) -> dict[str, np.ndarray]:
    """The file's tensors as float32 arrays. Integer and boolean tensors (or any other non-float) are refused,
    naming them: cast to float they would evaluate to a plausible-looking 9.80%. float16, bfloat16 and float64
    ones are converted, with one note on stderr, since they hold weights in another precision."""
    with safe_open(str(path), framework="np") as file:
        names = file.keys()  # a safe_open handle: not a dict, not iterable
        dtypes = {name: file.get_slice(name).get_dtype() for name in names}
        refused = [
            f"{name} ({_DTYPE_NAMES.get(dtype, dtype.lower())})"
            for name, dtype in sorted(dtypes.items())
            if dtype != "F32" and dtype not in CONVERTED_DTYPES
        ]
        if refused:
            shown = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
            raise WeightsError(
                f"{path} holds tensors that are not floating-point weights: {shown}; expected float32 (float16, "
                f"bfloat16 and float64 are converted); export them with this project (a training run writes "
                f"<out-dir>/{WEIGHTS_FILE})"
            )
        tensors = {name: _bfloat16(path, name) if dtypes[name] == "BF16" else file.get_tensor(name) for name in names}
    if converted := sorted({CONVERTED_DTYPES[dtype] for dtype in dtypes.values() if dtype in CONVERTED_DTYPES}):
        count = sum(dtype in CONVERTED_DTYPES for dtype in dtypes.values())
        print(
            f"note: {path} holds {' and '.join(converted)} weights ({count} of {len(dtypes)} tensors); "
            f"converted to float32",
            file=sys.stderr,
            flush=True,
        )
    return {name: np.asarray(tensor, dtype=np.float32) for name, tensor in tensors.items()}


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, float32 (`_load_float32`), checked against the CNN's names and
    shapes, all finite. A path that is not a regular file (a FIFO, a device) is refused without opening it."""
    path = Path(path)
    if (problem := file_problem(path)) is not None:
        raise WeightsError(f"{path} {problem}; export weights with a training run (it writes <out-dir>/{WEIGHTS_FILE})")
    try:
        arrays = _load_float32(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(
            f"{path} is not a safetensors file ({err}); pass a {WEIGHTS_FILE} written by a training run"
        ) from None
    expected = EXPECTED_SHAPES
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

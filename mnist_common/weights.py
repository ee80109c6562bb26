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
import os
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
from safetensors.numpy import save

from mnist_common.divergence import non_finite
from mnist_common.errors import ProjectError, shown_path
from mnist_common.files import first_line, write_atomically
from mnist_common.outdir import WEIGHTS_FILE  # noqa: F401  (the file each trainer writes at the end)
from mnist_common.paths import weights_problem


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


#: Bytes per element of the dtypes read (float32, and those converted to it).
_ITEMSIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
#: The longest JSON header read: this CNN's eight entries take under a kilobyte; the rest is room for metadata.
MAX_HEADER_BYTES = 1 << 20
#: The most bytes of tensors a file of this CNN's weights can hold: every one in float64, the widest dtype read.
MAX_TENSOR_BYTES = 8 * sum(int(np.prod(shape)) for shape in EXPECTED_SHAPES.values())


def _shown_names(entries: list[str]) -> str:
    return ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def _not_safetensors(path: Path, why: str) -> WeightsError:
    return WeightsError(
        f"{shown_path(path)} is not a safetensors file ({why}); pass a {WEIGHTS_FILE} written by a training run"
    )


def _header(path: Path, file: BinaryIO, size: int) -> dict[str, dict]:
    """The file's JSON header (safetensors: an 8-byte little-endian length, then the JSON), its entries' form
    checked: a dtype string, a shape of natural numbers and two data offsets each. Only the header is read."""
    if size < 8:
        raise _not_safetensors(path, f"{size} bytes, shorter than the 8-byte header length")
    length = int.from_bytes(file.read(8), "little")
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise _not_safetensors(
            path,
            f"its header declares {length} bytes, more than the {size - 8} the file holds after its length"
            if length <= MAX_HEADER_BYTES
            else f"its header declares {length} bytes, more than the {MAX_HEADER_BYTES} a header of this CNN needs",
        )
    try:
        header = json.loads(file.read(length))
    except (UnicodeDecodeError, ValueError) as err:
        raise _not_safetensors(path, f"its header is not JSON: {first_line(err, 100)}") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "its header is not a JSON object")
    header.pop("__metadata__", None)
    for name, entry in header.items():
        form_ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and isinstance(shape := entry.get("shape"), list)
            and all(type(n) is int and n >= 0 for n in shape)
            and isinstance(offsets := entry.get("data_offsets"), list)
            and len(offsets) == 2
            and all(type(n) is int and n >= 0 for n in offsets)
        )
        if not form_ok:
            raise _not_safetensors(path, f"its header's entry {name!r} is not a dtype, a shape and two data offsets")
    return header


def _check_header(path: Path, header: dict[str, dict], data_bytes: int) -> None:
    """Refuse, from the header alone, a file that is not this CNN's weights: tensors that are not floating-point,
    other names or shapes, or data offsets that do not tile exactly the bytes the file holds after its header."""
    dtypes = {name: entry["dtype"] for name, entry in header.items()}
    refused = [
        f"{shown_path(name)} ({_DTYPE_NAMES.get(dtype, dtype.lower())})"
        for name, dtype in sorted(dtypes.items())
        if dtype not in _ITEMSIZES
    ]
    if refused:
        raise WeightsError(
            f"{shown_path(path)} holds tensors that are not floating-point weights: {_shown_names(refused)}; "
            f"expected float32 (float16, bfloat16 and float64 are converted); export them with this project "
            f"(a training run writes <out-dir>/{WEIGHTS_FILE})"
        )
    expected = EXPECTED_SHAPES
    got = {name: tuple(entry["shape"]) for name, entry in header.items()}
    if got != expected:
        wrong = sorted(set(expected) ^ set(got)) or sorted(k for k in expected if got[k] != expected[k])
        details = ", ".join(
            f"{shown_path(k)} {got.get(k, 'missing')} (expected {expected.get(k, 'none')})" for k in wrong[:4]
        ) + (f" and {len(wrong) - 4} more" if len(wrong) > 4 else "")
        raise WeightsError(
            f"{shown_path(path)} does not hold this CNN's weights in PyTorch state_dict layout: {details}; "
            f"export them with this project (a training run writes <out-dir>/{WEIGHTS_FILE})"
        )
    declared = 0
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
        begin, end = entry["data_offsets"]
        size = int(np.prod(entry["shape"])) * _ITEMSIZES[entry["dtype"]]
        if begin != declared or end - begin != size:
            raise _not_safetensors(
                path,
                f"its header places {name} at bytes {begin}-{end}; expected {size} bytes from byte {declared}, "
                f"after the tensors before it",
            )
        declared = end
    if declared != data_bytes:
        raise WeightsError(
            f"{shown_path(path)} is {'cut short' if data_bytes < declared else 'longer than its header declares'}: "
            f"{data_bytes} bytes of tensors after its header, {declared} declared; "
            f"export the weights again with a training run (it writes <out-dir>/{WEIGHTS_FILE})"
        )


def _tensor(raw: bytes, entry: dict) -> np.ndarray:
    """One tensor as float32 from its bytes (little-endian, as safetensors writes). bfloat16 has no NumPy name:
    its 16-bit words are the top halves of float32 words."""
    dtype = entry["dtype"]
    if dtype == "BF16":
        values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.frombuffer(raw, dtype={"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype])
    return values.astype(np.float32).reshape(entry["shape"])


def _load_float32(path: Path) -> dict[str, np.ndarray]:
    """The file's tensors as float32 arrays, its header checked first (`_check_header`), so that a file of any
    size or content costs at most this CNN's size in memory. Integer and boolean tensors (or any other non-float)
    are refused, naming them: cast to float they would evaluate to a plausible-looking 9.80%. float16, bfloat16
    and float64 ones are converted, with one note on stderr, since they hold weights in another precision."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        header = _header(path, file, size)
        start = file.tell()
        _check_header(path, header, size - start)
        data = file.read(min(size - start, MAX_TENSOR_BYTES))
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensors[name] = _tensor(data[begin:end], entry)
    dtypes = {name: entry["dtype"] for name, entry in header.items()}
    if converted := sorted({CONVERTED_DTYPES[dtype] for dtype in dtypes.values() if dtype in CONVERTED_DTYPES}):
        count = sum(dtype in CONVERTED_DTYPES for dtype in dtypes.values())
        print(
            f"note: {shown_path(path)} holds {' and '.join(converted)} weights ({count} of {len(dtypes)} tensors); "
            f"converted to float32",
            file=sys.stderr,
            flush=True,
        )
    return tensors


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, float32 (`_load_float32`), checked against the CNN's names, shapes and
    sizes by the header before a tensor is read, all finite. A path that is not a regular file (a FIFO, a device)
    is refused without opening it: the header is checked against the file's length, which a pipe does not have."""
    path = Path(path)
    if (problem := weights_problem(path)) is not None:
        raise WeightsError(problem)
    try:
        arrays = _load_float32(path)
    except OSError as err:
        raise WeightsError(
            f"{shown_path(path)} cannot be read ({err.strerror or err}); "
            f"pass a {WEIGHTS_FILE} written by a training run"
        ) from None
    if bad := non_finite(arrays):
        raise WeightsError(
            f"{shown_path(path)} holds NaN or infinite values in {', '.join(bad)}: the weights of a diverged run, "
            f"which would predict nonsense; train again with a lower --lr, or pass another file"
        )
    return arrays

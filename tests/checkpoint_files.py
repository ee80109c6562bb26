"""Open and re-seal the trainers' checkpoint files, for tests that plant a fault behind a valid checksum.

The SHA-256 header proves a checkpoint whole, not trustworthy: anyone can compute one. These helpers do
what a forger would, so that the checks behind the checksum (NaN values, pickled code, missing parts)
are tested on their own.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from mnist_common.checkpoint import FRAMEWORKS
from mnist_common.files import checked_bytes, read_checked


def read_torch_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(io.BytesIO(read_checked(path, "torch", FRAMEWORKS)), weights_only=True)


def write_torch_checkpoint(path: Path, payload: Any) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    Path(path).write_bytes(checked_bytes("torch", buffer.getvalue()))

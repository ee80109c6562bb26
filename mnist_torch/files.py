"""Writing files so that a crash never leaves a half-written one under the final name.

Every file the project writes (metrics.json, plots, checkpoints, weights, the extracted
MNIST files) goes through `write_atomically`: the bytes go to ``<name>.partial`` first,
and one rename puts them in place once they are complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomically(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(partial_path)``, then rename the result to ``path``; on failure, remove the partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return path

"""Real MNIST, loaded once through torchvision and shared by both frameworks.

This module is the project's single data path: `mnist_jax.data` converts the very
tensors returned here instead of reading the files a second time; both trainers draw
their batch order from `mnist_common.batches`. The four original IDX files ship in
the repository gzipped (``data/MNIST/raw/*.gz``); they are verified against the
published SHA-256 digests on every load, so a model is never trained on partial or
altered data, and nothing is ever downloaded.

Where the files are (`extraction_dir`): the .gz are read from ``--data-dir``'s MNIST/raw (by default the
repository's data/ in a checkout, the package's own copy in an installed wheel, see
`mnist_common.config.DEFAULT_DATA_DIR`), and extracted beside them when that folder is writable. An
installed package's copy is never written into (``pip uninstall`` would leave 55 MB behind), nor is a
read-only folder (a read-only checkout): those are extracted once into the user cache,
``$XDG_CACHE_HOME/mnist_jax_torch/MNIST/raw`` (``~/.cache/...``), verified like any other and used only for the
very .gz files of the folder named (each extracted file records its .gz's SHA-256): a folder without them is refused
by name, whatever the cache holds.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from mnist_common.config import (  # noqa: F401  (re-exported: defined where no framework is imported)
    DEFAULT_DATA_DIR,
    IMAGE_SHAPE,
    MNIST_MEAN,
    MNIST_STD,
    NUM_CLASSES,
    NUM_TEST,
    NUM_TRAIN,
    PACKAGED_DATA_DIR,
)
from mnist_common.errors import ProjectError
from mnist_common.files import write_atomically
from mnist_common.paths import data_dir_problem

#: Published SHA-256 digests and sizes of the four uncompressed originals.
IDX_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}

#: The fix for a missing or damaged .gz: in a checkout, restore the repository's; in an installed package,
#: reinstall it (it has no git and no data/rebuild_mnist.py).
RESTORE_HINT = (
    "reinstall mnist-jax-torch (`pip install --force-reinstall --no-deps` with the wheel or folder it came from) "
    "or pass --data-dir a folder holding MNIST/raw/*.gz"
    if DEFAULT_DATA_DIR == PACKAGED_DATA_DIR
    else "restore it with `git checkout -- data/` or rebuild it with `python data/rebuild_mnist.py`"
)


class DataError(ProjectError, RuntimeError):
    """The MNIST files are missing or are not the published originals."""


class Split(NamedTuple):
    """One split held as whole tensors: images (N, 1, 28, 28) float32, normalized; labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class MNISTData:
    train: Split
    test: Split


def raw_dir(data_dir: Path | str) -> Path:
    """Where torchvision's ``MNIST(root=data_dir)`` looks for the IDX files."""
    return Path(data_dir) / "MNIST" / "raw"


def user_cache_dir() -> Path:
    """The data folder that receives the extracted files of a folder that must not or cannot be written:
    ``$XDG_CACHE_HOME/mnist_jax_torch`` (``~/.cache/mnist_jax_torch`` when XDG_CACHE_HOME is unset, empty or
    relative, as the XDG specification says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "mnist_jax_torch"


def extraction_dir(data_dir: Path | str) -> Path:
    """The data folder whose MNIST/raw receives the IDX files extracted from `data_dir`'s .gz: `data_dir`
    itself when its MNIST/raw is writable; `user_cache_dir()` for an installed package's own copy (never
    written into) and for a folder that is read-only."""
    folder = raw_dir(data_dir)
    if Path(data_dir).resolve() == PACKAGED_DATA_DIR or not os.access(folder, os.W_OK | os.X_OK):
        return user_cache_dir()
    return Path(data_dir)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(gz_path: Path, target: Path) -> None:
    """Decompress via a temporary file, so an interrupted extraction never leaves a partial IDX file."""

    def decompress(partial: Path) -> None:
        with gzip.open(gz_path, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)

    try:
        write_atomically(target, decompress)
    except (OSError, EOFError) as err:
        raise DataError(f"{gz_path} is unreadable ({err}); {RESTORE_HINT}") from None


def ensure_verified(data_dir: Path | str = DEFAULT_DATA_DIR) -> Path:
    """Make sure the four IDX files are present and byte-identical to the originals.

    A missing uncompressed file is extracted from its committed ``.gz``, into the folder
    `extraction_dir` names (unless all four are already beside the .gz); a file whose
    digest differs is reported, never replaced silently, so the user sees what happened.
    Returns the raw folder that holds the verified IDX files.
    """
    data_dir = Path(data_dir)
    if (problem := data_dir_problem(data_dir)) is not None:
        raise DataError(f"--data-dir {problem}")
    gz_folder = raw_dir(data_dir)
    extracted = all((gz_folder / name).is_file() for name in IDX_FILES)
    folder = gz_folder if extracted else raw_dir(extraction_dir(data_dir))
    for name, (expected, size) in IDX_FILES.items():
        path, gz_path = folder / name, gz_folder / (name + ".gz")
        if not extracted and not gz_path.is_file():  # checked first: a cache never stands in for the folder named
            raise DataError(
                f"{gz_path} is missing (expected the gzipped MNIST original, "
                f"SHA-256 of its contents {expected}); {RESTORE_HINT}"
            )
        cached = folder != gz_folder
        usable = path.exists() and (not cached or _extracted_from(gz_path, path))
        actual = sha256_of(path) if usable else None
        if cached and actual != expected:  # missing, another folder's, or damaged: the cache is rebuilt from gz_path
            if path.exists():  # False too where the cache's path runs through a file: `_writable` says so below
                path.unlink()
            actual = None
        source = path
        if actual is None:
            _writable(folder, gz_folder)
            _extract(gz_path, path)
            if cached:
                _source_record(path).write_text(sha256_of(gz_path))
            source, actual = gz_path, sha256_of(path)
        if actual != expected:
            got = f"{path.stat().st_size} bytes, SHA-256 {actual}"
            if source == path:
                fix = f"delete it to re-extract it from {name}.gz, or {RESTORE_HINT}"
            else:
                path.unlink()
                fix = RESTORE_HINT
            raise DataError(
                f"{source} does not hold the original {name} "
                f"(expected {size} bytes, SHA-256 {expected}; got {got}); {fix}"
            )
    return folder


def _source_record(path: Path) -> Path:
    """Beside an IDX file extracted into the user cache: the SHA-256 of the .gz it came from."""
    return path.with_name(path.name + ".source")


def _extracted_from(gz_path: Path, path: Path) -> bool:
    """Whether the cached `path` was extracted from this very `gz_path` (not from another folder's .gz files)."""
    try:
        return path.exists() and _source_record(path).read_text() == sha256_of(gz_path)
    except OSError:  # no record: extracted by an older version, or by another folder
        return False


def _writable(folder: Path, source: Path) -> None:
    """Create `folder`, where .gz files of `source` are about to be extracted, or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        problem = None if os.access(folder, os.W_OK | os.X_OK) else "it is not writable"
    except OSError as err:
        problem = f"it cannot be created ({err.strerror})"
    if problem is not None:
        raise DataError(
            f"cannot extract MNIST into {folder}: {problem} (expected a writable folder for the 55 MB of IDX files "
            f"of {source}); set XDG_CACHE_HOME to a writable folder, "
            "or pass --data-dir a writable folder holding MNIST/raw/*.gz"
        )


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), scaled to [0, 1] then standardized."""
    return ((pixels.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


def load_split(data_dir: Path | str, train: bool) -> Split:
    """One split as whole tensors: normalized once here instead of per image every epoch."""
    # Imported here, not above: torchvision's import takes over a second (it loads torch._dynamo), which a command
    # that loads no data (predict, a refused run) then does not pay.
    from torchvision.datasets import MNIST

    dataset = MNIST(root=str(data_dir), train=train, download=False)
    return Split(normalize(dataset.data), dataset.targets.long())


def load_mnist(data_dir: Path | str = DEFAULT_DATA_DIR) -> MNISTData:
    """Verified, normalized MNIST: 60 000 training and 10 000 test images."""
    root = ensure_verified(data_dir).parent.parent  # data_dir, or the folder its files were extracted into
    return MNISTData(train=load_split(root, train=True), test=load_split(root, train=False))

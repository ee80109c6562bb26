"""The shipped files are the real MNIST, verified on load; both frameworks see the same arrays in the same order."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_common.batches import batch_indices, epoch_permutation
from mnist_torch.data import (
    DEFAULT_DATA_DIR,
    IDX_FILES,
    MNIST_MEAN,
    MNIST_STD,
    DataError,
    ensure_verified,
    load_mnist,
    raw_dir,
    user_cache_dir,
)

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_shipped_gzips_hold_the_published_originals():
    for name, (digest, size) in IDX_FILES.items():
        payload = gzip.decompress((raw_dir(DEFAULT_DATA_DIR) / f"{name}.gz").read_bytes())
        assert len(payload) == size, name
        assert hashlib.sha256(payload).hexdigest() == digest, name


def test_idx_headers_are_big_endian_magic_and_dimensions():
    folder = ensure_verified()
    images = (folder / "train-images-idx3-ubyte").read_bytes()[:16]
    labels = (folder / "t10k-labels-idx1-ubyte").read_bytes()[:8]
    assert np.frombuffer(images, ">u4").tolist() == [2051, 60000, 28, 28]
    assert np.frombuffer(labels, ">u4").tolist() == [2049, 10000]


def test_splits_are_the_real_mnist(mnist):
    assert mnist.train.images.shape == (60000, 1, 28, 28) and mnist.train.images.dtype == torch.float32
    assert mnist.test.images.shape == (10000, 1, 28, 28)
    assert mnist.train.labels.dtype == torch.int64
    assert mnist.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(mnist.train.labels).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist.test.labels).tolist() == TEST_COUNTS


def test_normalization_uses_the_measured_training_statistics(mnist):
    pixels = mnist.train.images.double() * MNIST_STD + MNIST_MEAN  # undo the normalization: back to [0, 1]
    assert pixels.mean().item() == pytest.approx(0.1306604762738429, abs=1e-7)
    assert pixels.std().item() == pytest.approx(MNIST_STD, abs=1e-4)
    assert pixels.min().item() == pytest.approx(0.0, abs=1e-6) and pixels.max().item() == pytest.approx(1.0, abs=1e-6)


def test_jax_arrays_are_the_torch_tensors_in_nhwc(mnist, jax_mnist):
    assert jax_mnist.train.images.shape == (60000, 28, 28, 1) and jax_mnist.train.images.dtype == np.float32
    assert jax_mnist.train.labels.dtype == np.int32
    np.testing.assert_array_equal(jax_mnist.test.images[..., 0], mnist.test.images[:, 0].numpy())
    np.testing.assert_array_equal(jax_mnist.train.labels, mnist.train.labels.numpy())


def test_batch_order_depends_on_seed_and_epoch_only():
    np.testing.assert_array_equal(epoch_permutation(3, 1), epoch_permutation(3, 1))
    assert not np.array_equal(epoch_permutation(3, 1), epoch_permutation(3, 2))
    assert not np.array_equal(epoch_permutation(3, 1), epoch_permutation(4, 1))
    assert sorted(epoch_permutation(0, 1)) == list(range(60000))


def test_batches_are_full_and_disjoint():
    batches = list(batch_indices(seed=0, epoch=1, num_examples=1000, batch_size=128))
    assert len(batches) == 7 and all(len(b) == 128 for b in batches)
    assert len(np.unique(np.concatenate(batches))) == 7 * 128


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped .gz files, to damage without touching the repository's."""
    shutil.copytree(raw_dir(DEFAULT_DATA_DIR), raw_dir(tmp_path), ignore=shutil.ignore_patterns("*-ubyte"))
    return tmp_path


def test_copy_extracts_and_verifies(data_copy):
    folder = ensure_verified(data_copy)
    assert sorted(p.name for p in folder.glob("*-ubyte")) == sorted(IDX_FILES)
    assert not list(folder.glob("*.partial"))


def test_missing_gzip_names_file_and_fix(data_copy):
    (raw_dir(data_copy) / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        ensure_verified(data_copy)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz is missing" in message
    assert IDX_FILES["t10k-labels-idx1-ubyte"][0] in message and "git checkout -- data/" in message
    assert "\n" not in message


def test_truncated_file_is_refused_not_used(data_copy):
    ensure_verified(data_copy)
    path = raw_dir(data_copy) / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1_000_000])
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte does not hold the original.*1000000 bytes.*delete it"
    ):
        load_mnist(data_copy)


def test_altered_byte_is_refused(data_copy):
    ensure_verified(data_copy)
    path = raw_dir(data_copy) / "train-labels-idx1-ubyte"
    payload = bytearray(path.read_bytes())
    payload[100] = (payload[100] + 1) % 10
    path.write_bytes(bytes(payload))
    with pytest.raises(DataError, match=IDX_FILES["train-labels-idx1-ubyte"][0]):
        ensure_verified(data_copy)


def test_corrupt_gzip_is_refused_and_leaves_nothing_behind(data_copy):
    gz_path = raw_dir(data_copy) / "t10k-images-idx3-ubyte.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:5000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is unreadable.*rebuild_mnist.py"):
        ensure_verified(data_copy)
    assert not (raw_dir(data_copy) / "t10k-images-idx3-ubyte").exists()
    assert not list(raw_dir(data_copy).glob("*.partial"))


def test_data_dir_pointing_nowhere(tmp_path):
    with pytest.raises(DataError, match=r"--data-dir .*nowhere does not exist; expected the folder holding MNIST/raw"):
        load_mnist(tmp_path / "nowhere")


def test_empty_data_dir_names_the_first_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is missing"):
        load_mnist(tmp_path)


@pytest.fixture
def filled_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user cache (XDG_CACHE_HOME in tmp_path) that an earlier run filled with the shipped MNIST, extracted and
    recorded as the user cache holds it; returns its raw folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "readonly-copy"
    shutil.copytree(raw_dir(DEFAULT_DATA_DIR), raw_dir(source), ignore=shutil.ignore_patterns("*-ubyte"))
    cached = raw_dir(user_cache_dir())
    cached.mkdir(parents=True)
    for name in IDX_FILES:
        gz_path = raw_dir(source) / f"{name}.gz"
        (cached / name).write_bytes(gzip.decompress(gz_path.read_bytes()))
        (cached / f"{name}.source").write_text(hashlib.sha256(gz_path.read_bytes()).hexdigest())
    return cached


@pytest.mark.parametrize("form", ["missing", "empty", "a file", "a symlink loop"])
def test_a_data_dir_without_mnist_is_refused_by_name_whatever_the_cache_holds(form, filled_cache, tmp_path):
    """The named folder is the one used, or the run is refused naming it: a user cache filled by an earlier run never
    stands in for a --data-dir whose MNIST/raw is missing, empty, a file or a symlink loop."""
    data_dir = tmp_path / "not-mnist"
    data_dir.mkdir()
    raw = raw_dir(data_dir)
    if form == "empty":
        raw.mkdir(parents=True)
    elif form == "a file":
        raw.parent.mkdir()
        raw.write_text("not a folder")
    elif form == "a symlink loop":
        raw.parent.mkdir()
        raw.symlink_to(raw)
    with pytest.raises(DataError) as err:
        load_mnist(data_dir)
    message = str(err.value)
    assert f"{raw}/train-images-idx3-ubyte.gz is missing" in message and str(filled_cache) not in message


def test_the_cache_serves_only_the_gz_files_of_the_folder_named(filled_cache, data_copy, monkeypatch):
    """A read-only folder's (here: the package's own copy's) files come from the cache only when the cache was
    extracted from that folder's very .gz files; a damaged or foreign cache entry is rebuilt from them, not blamed."""
    monkeypatch.setattr("mnist_torch.data.PACKAGED_DATA_DIR", data_copy.resolve())  # extracted into the cache
    assert ensure_verified(data_copy) == filled_cache  # the same .gz bytes as the cache's: used as it is
    damaged = filled_cache / "train-labels-idx1-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:100])
    foreign = filled_cache / "t10k-labels-idx1-ubyte.source"
    foreign.write_text("0" * 64)  # extracted from other .gz files
    assert ensure_verified(data_copy) == filled_cache
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == IDX_FILES["train-labels-idx1-ubyte"][0]
    assert (
        foreign.read_text()
        == hashlib.sha256((raw_dir(data_copy) / "t10k-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    )
    assert not list(raw_dir(data_copy).glob("*-ubyte"))  # nothing written into the read-only folder


def test_the_suite_runs_with_a_home_and_cache_of_its_own():
    """No test reads or writes the user's home or caches: tests/conftest.py gives the session its own."""
    import pwd

    assert Path.home() != Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert user_cache_dir().is_relative_to(Path.home())

"""An installed wheel works as the checkout does: the data travels in it and is found from any folder.

The e2e test builds the wheel from a copy of the sources (the committed files only: no extracted IDX
file, no build/ left in the repository), installs it with ``pip install --target`` into a folder it
then makes read-only, and from an unrelated folder, with that folder first on PYTHONPATH (ahead of the
venv's editable install) and HOME/XDG_CACHE_HOME in a temporary folder, trains each framework briefly
and evaluates: the .gz files come from the wheel and are extracted into the user cache, never into
the installed package (the test checks that no file appeared there: the chmod does not stop root, but the
rule never writes into an installed package's copy, whoever runs it). The wheel is built with the venv's
setuptools (``--no-build-isolation``, pyproject's dev extra asks for >= 77.0.1), so nothing is downloaded.

The unit tests check the rule of `mnist_torch.data.extraction_dir`: beside the .gz when that folder is
writable, in the user cache for an installed package's own copy and for a read-only folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_common.config import PACKAGED_DATA_DIR
from mnist_torch.data import (
    DEFAULT_DATA_DIR,
    IDX_FILES,
    DataError,
    ensure_verified,
    extraction_dir,
    raw_dir,
    sha256_of,
    user_cache_dir,
)

REPO = Path(__file__).resolve().parent.parent
GZ_FILES = sorted(f"{name}.gz" for name in IDX_FILES)
#: What the user cache holds after an extraction: the IDX files, each with the SHA-256 of the .gz it came from.
EXTRACTED = {
    **{name: digest for name, (digest, _) in IDX_FILES.items()},
    **{
        f"{name}.source": hashlib.sha256((REPO / "data" / "MNIST" / "raw" / f"{name}.gz").read_bytes()).hexdigest()
        for name in IDX_FILES
    },
}


def cached_files(folder: Path) -> dict[str, str]:
    """Each IDX file of `folder` by its SHA-256, each record of its source by the digest it records."""
    return {p.name: p.read_text() if p.suffix == ".source" else sha256_of(p) for p in folder.iterdir()}


#: Where the wheel carries the .gz files (pyproject.toml's [tool.setuptools.package-dir]).
GZ_IN_WHEEL = "mnist_common/_data/MNIST/raw/"


def _tree_mode(root: Path, writable: bool) -> None:
    """Make every file and folder under `root` read-only, or writable again (for the clean-up)."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        mode = mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        path.chmod(mode)


# --- the location rule -------------------------------------------------------------------------------------


def test_user_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert user_cache_dir() == tmp_path / "cache" / "mnist_jax_torch"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for relative_or_unset in ("relative/cache", ""):  # the XDG specification: a relative value is ignored
        monkeypatch.setenv("XDG_CACHE_HOME", relative_or_unset)
        assert user_cache_dir() == tmp_path / "home" / ".cache" / "mnist_jax_torch"


def test_extraction_goes_beside_the_gz_when_writable_and_never_into_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    raw_dir(tmp_path / "data").mkdir(parents=True)
    assert extraction_dir(tmp_path / "data") == tmp_path / "data"
    assert extraction_dir(PACKAGED_DATA_DIR) == tmp_path / "cache" / "mnist_jax_torch"  # even as root, even writable
    if DEFAULT_DATA_DIR != PACKAGED_DATA_DIR:  # a checkout: its data/ is where the tests found the files
        assert extraction_dir(DEFAULT_DATA_DIR) == DEFAULT_DATA_DIR


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for this process: chmod, or for root (whom no mode bit stops) the immutable attribute;
    skips the test where root may not set it (a container without CAP_LINUX_IMMUTABLE, a file system without it)."""
    if os.geteuid() != 0:
        _tree_mode(folder, writable=False)
        try:
            yield
        finally:
            _tree_mode(folder, writable=True)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], check=False, capture_output=True).returncode != 0:
        pytest.skip(
            "running as root, and chattr +i (the only way to make a folder read-only for root) is not allowed here"
        )
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


@pytest.mark.e2e
def test_read_only_data_folder_is_extracted_into_the_cache(tmp_path, monkeypatch):
    """A read-only checkout whose .gz were never extracted: the files go to the user cache, verified, once."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    raw_dir(data).mkdir(parents=True)
    for name in GZ_FILES:
        shutil.copy(raw_dir(REPO / "data") / name, raw_dir(data) / name)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))  # a cache that cannot be created
    with read_only(raw_dir(data)):
        assert not os.access(raw_dir(data), os.W_OK)
        with pytest.raises(DataError) as err:
            ensure_verified(data)
        message = str(err.value)
        assert message.startswith(f"cannot extract MNIST into {tmp_path / 'a-file' / 'cache'}") and "\n" not in message
        assert "set XDG_CACHE_HOME to a writable folder" in message and "git checkout" not in message
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
        assert ensure_verified(data) == raw_dir(cache / "mnist_jax_torch")
        extracted = {p: p.stat().st_mtime_ns for p in raw_dir(cache / "mnist_jax_torch").iterdir()}
        assert ensure_verified(data) == raw_dir(cache / "mnist_jax_torch")  # the second load uses them as they are
        assert {p: p.stat().st_mtime_ns for p in raw_dir(cache / "mnist_jax_torch").iterdir()} == extracted
    assert sorted(p.name for p in raw_dir(data).iterdir()) == GZ_FILES  # nothing written beside the .gz
    cached = raw_dir(cache / "mnist_jax_torch")
    assert cached_files(cached) == EXTRACTED


# --- the wheel ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the committed sources (so the repository gets no build/)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    skip = shutil.ignore_patterns("__pycache__", "*-ubyte", "*.partial")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("mnist_common", "mnist_torch", "mnist_jax"):
        shutil.copytree(REPO / package, source / package, ignore=skip)
    raw_dir(source / "data").mkdir(parents=True)
    for name in GZ_FILES:
        shutil.copy(raw_dir(REPO / "data") / name, raw_dir(source / "data") / name)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(root / "dist"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = (root / "dist").glob("mnist_jax_torch-*.whl")
    return built


@pytest.mark.e2e
def test_wheel_carries_the_gz_files_once(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        data = sorted(name for name in names if not name.endswith(".py") and ".dist-info/" not in name)
        assert data == [GZ_IN_WHEEL + name for name in GZ_FILES]
        for name in GZ_FILES:
            assert archive.read(GZ_IN_WHEEL + name) == (raw_dir(REPO / "data") / name).read_bytes()
    (metadata,) = {name.split("/")[0] for name in names} - {
        "mnist_common",
        "mnist_torch",
        "mnist_jax",
    }  # no tests, no data/ script
    assert metadata.startswith("mnist_jax_torch-") and metadata.endswith(".dist-info")


SHADOW_CHECK = """
import sys
from pathlib import Path
import mnist_jax, mnist_torch
from mnist_common.config import DEFAULT_DATA_DIR
site = Path(sys.argv[1]).resolve()
for package in (mnist_jax, mnist_torch):
    assert Path(package.__file__).resolve().is_relative_to(site), package.__file__
assert DEFAULT_DATA_DIR == site / "mnist_common" / "_data", DEFAULT_DATA_DIR
"""


@pytest.mark.e2e
def test_installed_wheel_trains_and_evaluates_from_any_folder(wheel, tmp_path):
    site, work, home, cache = (tmp_path / name for name in ("site", "work", "home", "cache"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for folder in (work, home, cache):
        folder.mkdir()
    _tree_mode(site, writable=False)
    installed = sorted(str(p.relative_to(site)) for p in site.rglob("*") if "__pycache__" not in p.parts)
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(home), "XDG_CACHE_HOME": str(cache)}

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args], cwd=work, env=env, check=False, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
        return done.stdout

    try:
        run("-c", SHADOW_CHECK, str(site))  # the installed copy, not the checkout's editable one
        flags = ["--epochs", "1", "--train-size", "1280", "--test-size", "1000", "--quiet"]  # evaluate: all 10 000
        run("-m", "mnist_torch.train", *flags, "--out-dir", "runs/torch")
        run("-m", "mnist_jax.train", *flags, "--out-dir", "runs/jax")
        result = json.loads(run("-m", "mnist_jax.evaluate", "--weights", "runs/torch/weights.safetensors", "--json"))
    finally:
        _tree_mode(site, writable=True)
    assert result["total"] == 10_000 and result["test_accuracy"] > 0.3
    for framework in ("torch", "jax"):  # the default --data-dir: the package's own copy
        metrics = json.loads((work / "runs" / framework / "metrics.json").read_text())
        assert Path(metrics["config"]["data_dir"]) == site.resolve() / "mnist_common" / "_data"
    cached = raw_dir(cache / "mnist_jax_torch")
    assert cached_files(cached) == EXTRACTED
    assert sorted(str(p.relative_to(site)) for p in site.rglob("*") if "__pycache__" not in p.parts) == installed

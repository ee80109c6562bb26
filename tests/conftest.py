"""The tests' one departure from the root conftest: trainers started as subprocesses share a compilation cache.

The root conftest turns JAX's persistent cache off, so that the benchmarks time compilations and no test writes
into the user's cache. Most end-to-end tests start `python -m mnist_jax.train` several times with the same
flags, and each start compiled the same fused steps again (seconds each, on 2 cores): here they share one
cache in the session's temporary folder, as a user's second run shares the user's. What a test proves of
compilation itself runs with the cache off or in a folder of its own (tests/test_interrupts.py,
tests/test_cli.py's cache test). This process's own JAX keeps the cache off (root conftest), except in an
end-to-end session, whose longer in-process runs train the same steps again and again. And the signals a
background start ignores are given back to the commands the tests start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import pytest

from mnist_common.interrupts import SIGNALS

#: The user's HOME and XDG_CACHE_HOME, put back when the session ends.
_USER_HOME = {name: os.environ.get(name) for name in ("HOME", "XDG_CACHE_HOME")}


def pytest_unconfigure(config: pytest.Config) -> None:
    home = os.environ.get("HOME", "")
    for name, value in _USER_HOME.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if os.path.basename(home).startswith("mnist-tests-home-"):
        shutil.rmtree(home, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """The session's own HOME and XDG_CACHE_HOME, for this process and every command it starts: no test reads or
    writes the user's home or caches (an MNIST the user cache holds, say, cannot change an answer).

    And give the commands the tests start the signals' default dispositions: a suite started in the background of a
    non-interactive shell inherits SIGINT and SIGQUIT ignored, one started under ``nohup`` SIGHUP, and so would
    every trainer and script it starts (an ignored signal stays ignored across exec, as nohup relies on), and the
    tests of those signals would fail."""
    home = tempfile.mkdtemp(prefix="mnist-tests-home-")
    os.environ["HOME"], os.environ["XDG_CACHE_HOME"] = home, os.path.join(home, ".cache")
    for signum in SIGNALS:
        if signal.getsignal(signum) == signal.SIG_IGN:
            # SIGINT gets Python's own handler (SIG_DFL in the children), the others SIG_DFL
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[None]:
    """The session's cache for the trainers it starts; in an end-to-end session (``-m e2e``) this process's own
    JAX uses it too, before its first compilation: its longer in-process runs (resumed, stopped, repeated with
    other settings) compile the same steps again and again."""
    folder = tmp_path_factory.mktemp("xla-cache")
    in_process = "e2e" in pytestconfig.getoption("markexpr", "")
    before = {  # put back at the end, with the minimum compile time that the trainers' use_compilation_cache sets
        name: getattr(jax.config, name)
        for name in (
            "jax_enable_compilation_cache",
            "jax_compilation_cache_dir",
            "jax_persistent_cache_min_compile_time_secs",
        )
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_ENABLE_COMPILATION_CACHE", "true")
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(folder))
        if in_process:
            jax.config.update("jax_enable_compilation_cache", True)
            jax.config.update("jax_compilation_cache_dir", str(folder))
        try:
            yield
        finally:
            for name, value in before.items():
                jax.config.update(name, value)


#: The small run the kill and interrupt tests stop and resume: 10 steps an epoch (about 0.4 s on 2 cores), still long
#: enough for a signal sent after epoch 1's line to land in epoch 2, each evaluated on the first 1 000 test images
#: (--test-size), which the stops do not need all of.
SMALL_RUN = ["--epochs", "2", "--train-size", "1280", "--test-size", "1000"]


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, float]]:
    """``uninterrupted_run("torch" | "jax")``: the out-dir of `SMALL_RUN` by command, never stopped, and its seconds;
    run once per session, the reference that every stopped-and-resumed run of tests/test_kill.py and
    tests/test_interrupts.py must equal byte for byte."""
    runs: dict[str, tuple[Path, float]] = {}

    def run(framework: str) -> tuple[Path, float]:
        if framework not in runs:
            out_dir = tmp_path_factory.mktemp(f"{framework}-uninterrupted")
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", f"mnist_{framework}.train", *SMALL_RUN, "--quiet", "--out-dir", str(out_dir)],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "true"},  # the session's, also where a test's is off
            )
            assert done.returncode == 0, done.stderr
            runs[framework] = out_dir, time.perf_counter() - start
        return runs[framework]

    return run

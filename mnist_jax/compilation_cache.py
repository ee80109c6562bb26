"""JAX's persistent compilation cache, so that a second run loads its compiled steps from disk.

Compiling the training and evaluation steps takes a few seconds on a CPU, every run. JAX can keep
the compiled executables on disk, keyed by the program, the compiler options, the device and the
JAX version, but does so only when told where, and only for compilations over one second.
The trainer turns it on for every compilation, in JAX's own setting when the user gave one
(`JAX_COMPILATION_CACHE_DIR=...`), else in `DEFAULT_CACHE_DIR`; `JAX_ENABLE_COMPILATION_CACHE=false`
turns it off. It counts the cache's hits and misses so that metrics.json can say whether the
compile seconds were spent compiling or loading.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jax

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist_jax" / "xla"

_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"


def cache_dir_problem(directory: Path) -> str | None:
    """Why the cache cannot be written in `directory`, or None. It creates the folder (as JAX would) and one
    empty file in it, then removes the file: a trial write, so that root on a read-only file system, where
    permission bits say nothing, is caught as well."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


def use_compilation_cache() -> Path | None:
    """Cache every later compilation on disk; returns the folder, or None when the user turned the cache off
    or it cannot be written.

    Must run before this process compiles anything: JAX decides once, at its first compilation,
    whether the cache is in use (`count_cache_lookups` then sees neither hits nor misses).

    A folder that cannot be written (read-only, not a folder, on a full disk) is not an error: the cache only
    saves compile seconds. One note on stderr names it and why, and the run goes on without the persistent
    cache (JAX would otherwise warn at every compilation, two lines each).
    """
    if not jax.config.jax_enable_compilation_cache:
        return None
    directory = Path(jax.config.jax_compilation_cache_dir or DEFAULT_CACHE_DIR)
    if (problem := cache_dir_problem(directory)) is not None:
        print(
            f"note: the compilation cache folder {directory} cannot be written ({problem}); running without the "
            f"persistent compilation cache (set JAX_COMPILATION_CACHE_DIR to a writable folder, or "
            f"JAX_ENABLE_COMPILATION_CACHE=false to silence this)",
            file=sys.stderr,
            flush=True,
        )
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Cache them all: many of ours compile in under JAX's default minimum of 1 s (docs/design.md).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return directory


def current_cache_dir() -> Path | None:
    """The folder `use_compilation_cache` put in use, or None when the cache is off."""
    if not jax.config.jax_enable_compilation_cache or not jax.config.jax_compilation_cache_dir:
        return None
    return Path(jax.config.jax_compilation_cache_dir)


@contextlib.contextmanager
def count_cache_lookups() -> Iterator[dict[str, int]]:
    """Count the persistent cache's hits and misses among the compilations inside the block.

    Both stay 0 when the cache is not in use. A compilation that JAX already holds in memory
    does not reach the persistent cache and is not counted.
    """
    counts = {"hits": 0, "misses": 0}

    def listener(event: str, **_: str | int) -> None:
        if event == _HIT:
            counts["hits"] += 1
        elif event == _MISS:
            counts["misses"] += 1

    jax.monitoring.register_event_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_listener(listener)


def describe_lookups(lookups: dict[str, int], cache_dir: Path | None) -> str:
    """Whether the compile seconds were spent compiling or loading, for the line the trainer prints."""
    if lookups["hits"] + lookups["misses"] == 0:
        return "compilation cache off" if cache_dir is None else "compilation cache not in use in this process"
    return (
        f"{lookups['hits']} of {lookups['hits'] + lookups['misses']} loaded from the compilation cache in {cache_dir}"
    )

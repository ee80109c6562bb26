"""``--profile``'s capture in JAX: ``jax.profiler.trace`` over a block, its trace written for Perfetto or TensorBoard.

Mirrors `mnist_torch/profiling.py`; which steps are captured is decided in `mnist_common.profiling`. The
per-kernel profile (`experiments/profile.py`) captures through it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax


def profile_options() -> Any:
    """No Python tracer (it adds an event per Python call to the profiled steps); None where unsupported."""
    try:
        options = jax.profiler.ProfileOptions()
        options.python_tracer_level = 0
        return options
    except (AttributeError, TypeError):
        return None


@contextlib.contextmanager
def capture(folder: Path, device_type: str = "cpu") -> Iterator[None]:
    """Profile the block into `folder`: TensorBoard's profile (plugins/profile/RUN/HOST.xplane.pb) and a Perfetto
    trace beside it (perfetto_trace.json.gz), in which every op event names its HLO instruction (``args.hlo_op``).
    `device_type` is taken for the mirror's sake: JAX's profiler traces every device it runs on."""
    del device_type
    options = profile_options()
    kwargs = {"create_perfetto_trace": True, **({"profiler_options": options} if options else {})}
    with jax.profiler.trace(str(folder), **kwargs):
        yield

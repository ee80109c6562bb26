"""A command's exit without the interpreter's final garbage collections.

Once a command's work is done, CPython's finalization collects garbage across every object still alive, and
PyTorch and JAX leave well over a million: one to three seconds per command on two cores (measured:
benchmarks/RESULTS.md, 'Design measurements'), paid after the final line by every command, and by every test
and benchmark that starts one. Freezing the heap once the other exit handlers have run skips those walks; the
memory goes back to the system with the process. Nothing of the commands waits on a finalizer: each file is
written whole (`mnist_common.files.write_atomically`) before the final line, and the TensorBoard log, the
out-dir's lock and the process group are closed explicitly. Like `mnist_common.interrupts`, standard library only.
"""

from __future__ import annotations

import atexit
import gc


def skip_final_collection() -> None:
    """Freeze the heap at exit. Called before PyTorch or JAX load: exit handlers run last-registered first, so
    theirs (and any registered later) still run, before this one."""
    atexit.register(gc.freeze)

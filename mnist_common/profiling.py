"""``--profile DIR``: which training steps the trainers capture, defined once for both.

Each framework captures with its own profiler (`mnist_torch.profiling.capture`: ``torch.profiler``;
`mnist_jax.profiling.capture`: ``jax.profiler.trace``); this module picks the calls of the training step to
capture and opens and closes the capture around them, so that both trainers profile the same steps. It
captures PROFILED_CALLS calls of the first epoch the run trains, after the first call: compilation is behind
the trainers before their first epoch, and the first call still pays one-off costs (allocations, caches).
The steps are the run's own, so that profiling changes nothing in the training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

#: Calls of the training step captured: a few steps of PyTorch (one per call), a few chunks of JAX's.
PROFILED_CALLS = 3


class StepWindow:
    """Opens `capture(folder)` before call `first` of an epoch's `calls` calls and closes it after call `last`,
    once the device has finished it (`after`'s `wait`). With `folder` None it does nothing."""

    def __init__(
        self, folder: Path | None, calls: int, capture: Callable[[Path], AbstractContextManager[object]]
    ) -> None:
        self.folder = folder
        self.capture = capture
        self.first = 1 if calls > 1 else 0
        self.last = min(calls, self.first + PROFILED_CALLS) - 1
        self.steps = 0  # SGD steps captured so far
        self.done = False
        self.stack = contextlib.ExitStack()

    def before(self, index: int, steps: int) -> None:
        """Call `index` (of `steps` SGD steps) is about to run."""
        if self.folder is None:
            return
        if index == self.first:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.stack.enter_context(self.capture(self.folder))
        if self.first <= index <= self.last:
            self.steps += steps

    def after(self, index: int, wait: Callable[[], object]) -> None:
        """Call `index` has been dispatched; `wait` blocks until the device has finished it."""
        if self.folder is not None and index == self.last:
            wait()
            self.stack.close()
            self.done = True

    def describe(self) -> str:
        """What was written, for the trainer's output."""
        return (
            f"profiled {self.steps} training steps into {self.folder} "
            "(open its trace in ui.perfetto.dev or TensorBoard)"
        )

    def __enter__(self) -> StepWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()  # an interrupt or an error inside the window ends the capture too

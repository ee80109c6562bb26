"""A progress bar within each epoch, shared by both trainers.

The bar goes to stderr and only when stderr is a terminal (and not ``--quiet``): the
per-epoch summary lines on stdout stay the plain, parseable record of the run, and logs
or pipes never fill with carriage returns.

Reading a loss forces the host to wait for the device (a ``.item()`` in PyTorch, a
``float()`` of a JAX array, which also ends JAX's asynchronous dispatch). So the bar
reads the latest loss only every ``refresh_every`` steps and advances blindly in
between; the images/s it shows are measured at those synchronization points, so they
are true throughput, not dispatch speed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm

#: Steps between two loss reads (and bar refreshes): rare enough not to serialize the device.
REFRESH_EVERY = 20


def progress_enabled(quiet: bool) -> bool:
    """A bar only for a person watching a terminal: never with --quiet, in a pipe, a log file or CI."""
    return not quiet and sys.stderr.isatty()


class EpochProgress:
    """One epoch's bar: ``step(read_loss)`` after every training step, ``close()`` at the end.

    ``read_loss`` is a callable so that the loss is read (and the device waited for) only
    when the bar is about to show it. Disabled, every call is a no-op.
    """

    def __init__(
        self, steps: int, epoch: int, epochs: int, batch_size: int, enabled: bool, refresh_every: int = REFRESH_EVERY
    ) -> None:
        self.steps = steps
        self.batch_size = batch_size
        self.refresh_every = refresh_every
        self.done = 0
        self.start = time.perf_counter()
        self.bar = (
            tqdm(
                total=steps,
                desc=f"epoch {epoch}/{epochs}",
                unit="step",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
            if enabled
            else None
        )

    def step(self, read_loss: Callable[[], float]) -> None:
        self.done += 1
        if self.bar is None or (self.done % self.refresh_every and self.done != self.steps):
            return
        loss = read_loss()  # waits for the device: every step so far has now run
        images_per_s = self.done * self.batch_size / (time.perf_counter() - self.start)
        self.bar.set_postfix_str(f"loss {loss:.4f}  {images_per_s:,.0f} img/s", refresh=False)
        self.bar.update(self.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

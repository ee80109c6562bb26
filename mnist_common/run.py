"""One training run's bookkeeping, the same in both trainers: everything `_train` does around its loop.

Each trainer's `_train` starts its framework (the device, the data, the state, the compiled steps) and runs
the epoch loop; a `Run` does the rest, alike for both: which epochs are left (--epochs, --stop-at-accuracy,
the records of a run it resumes), the divergence check, the epoch's record with its TensorBoard scalars,
checkpoint and line, and at the end metrics.json, the weights, the plots and the final line. Process 0
writes (`writer`); every process of a data-parallel run decides alike, from the same records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mnist_common import interrupts
from mnist_common.batches import num_batches
from mnist_common.checkpoint import records_to_json
from mnist_common.config import TrainConfig, stopped_at
from mnist_common.divergence import Diverged, check_epoch, kept, records_divergence
from mnist_common.outdir import check_held, replace_earlier
from mnist_common.plots import write_plots
from mnist_common.report import EpochRecord, format_epoch, of_test_set, write_metrics
from mnist_common.tensorboard import TrainingLog
from mnist_common.weights import WEIGHTS_FILE


class Prepared(NamedTuple):
    """What preparing a run's training steps took, for the line the trainer prints and for metrics.json: the
    seconds (None: nothing to prepare), the line (None: none to print) and, for JAX, the compilation cache's use."""

    seconds: float | None
    line: str | None
    cache: dict[str, Any] | None = None


class Run:
    """The bookkeeping of one run from its first epoch to train to its final line; a context manager around
    the epoch loop (it closes the TensorBoard log).

    `earlier`: the files of an earlier run in the out-dir (`mnist_common.outdir.claim`), which --overwrite
    replaces at the first checkpoint. `records`: the epochs a resumed run's checkpoint holds, continued in
    place. `device`, `versions`, what preparing the steps took (`prepared`) and `parallel` are what metrics.json
    says of the run (`mnist_common.report.write_metrics`)."""

    def __init__(
        self,
        config: TrainConfig,
        framework: str,
        writer: bool,
        earlier: list[str],
        records: list[EpochRecord],
        device: str,
        versions: dict[str, str],
        prepared: Prepared,
        parallel: dict[str, int],
    ) -> None:
        self.config, self.framework, self.writer, self.earlier, self.records = (
            config,
            framework,
            writer,
            earlier,
            records,
        )
        self.device, self.versions, self.compile_seconds = device, versions, prepared.seconds
        self.parallel, self.compilation_cache = parallel, prepared.cache
        self.first_epoch = len(records) + 1  # --profile captures steps of it; --tensorboard continues from it
        steps_per_epoch = num_batches(config.train_size, config.batch_size)
        self.images_per_epoch = steps_per_epoch * config.batch_size
        self.log = (
            TrainingLog(config.tensorboard, framework, config.to_json(), steps_per_epoch, len(records))
            if writer and config.tensorboard is not None
            else None
        )
        if self.log is not None and self.log.note is not None and not config.quiet:
            print(self.log.note, flush=True)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.log is not None:
            self.log.close()

    def stopped(self) -> int | None:
        """The epoch after which --stop-at-accuracy ended the run (this one or the one it resumes), or None."""
        return stopped_at(self.config, [r.test_accuracy for r in self.records])

    def epochs(self) -> Iterator[int]:
        """The epochs left to train, in order: up to --epochs, none once --stop-at-accuracy is reached."""
        for epoch in range(len(self.records) + 1, self.config.epochs + 1):
            if self.stopped() is not None:
                return
            interrupts.now(f"during epoch {epoch}/{self.config.epochs}")
            yield epoch

    def profile(self, epoch: int) -> Path | None:
        """Where --profile's trace of `epoch` goes: the first epoch this process trains, process 0 only."""
        return self.config.profile if self.writer and epoch == self.first_epoch else None

    def metrics(self, diverged: dict[str, Any] | None = None, stopped: int | None = None) -> Path:
        return write_metrics(
            self.framework,
            self.config,
            self.records,
            self.device,
            self.versions,
            self.compile_seconds,
            self.compilation_cache,
            diverged,
            parallel=self.parallel,
            stopped_at_accuracy=stopped,
        )

    def check(self, epoch: int, losses: np.ndarray, params_finite: bool) -> None:
        """`Diverged` on a non-finite loss or parameter: nothing of the epoch is saved, and metrics.json says
        where the run stopped, unless it would replace or mix with an earlier run's files."""
        recorded = records_divergence(self.config.out_dir, self.earlier)
        last_good = self.records[-1].epoch if self.records else None
        try:
            check_epoch(epoch, losses, params_finite, self.config.lr, kept(self.config.out_dir, last_good, recorded))
        except Diverged as err:
            if self.writer and recorded:
                self.metrics(err.record())
            raise

    def end_epoch(
        self,
        epoch: int,
        losses: np.ndarray,
        test_loss: float,
        test_accuracy: float,
        seconds: float,
        save_checkpoint: Callable[[], Path],
    ) -> None:
        """Record the epoch (`seconds` of training alone), log it, have process 0 write its checkpoint with
        `save_checkpoint` (which returns the file's path), and print its line."""
        record = EpochRecord(
            epoch, float(losses.mean()), test_loss, test_accuracy, seconds, self.images_per_epoch / seconds
        )
        self.records.append(record)
        if self.log is not None:
            self.log.epoch(record, losses.tolist())
        if self.writer:
            check_held(self.config.out_dir)  # its folder or lock removed: stop rather than write into a recreated one
            interrupts.now("while writing the checkpoint")
            self.earlier = replace_earlier(self.config.out_dir, self.earlier)  # --overwrite: at the first save
            with interrupts.deferred():  # a checkpoint begun is finished; then the interrupt acts
                path = save_checkpoint()
                interrupts.kept(f"the checkpoint after epoch {epoch} in {path}")
            interrupts.now(f"after epoch {epoch}/{self.config.epochs}")  # the checkpoint is whole: say so
        if not self.config.quiet:
            print(format_epoch(record, self.config.epochs), flush=True)

    def finishing(self) -> None:
        """Say, should an interrupt come now, that the epochs are done and the results are being written."""
        interrupts.now("after the last epoch, while writing metrics.json, the weights and the plots")

    def finish(
        self,
        export_weights: Callable[[Path], object],
        images: Any,
        labels: Any,
        predictions: np.ndarray,
        where: str,
    ) -> None:
        """Process 0 writes metrics.json, the weights (with `export_weights`) and the plots of the test
        `images`, their `labels` (host arrays of either framework) and the model's `predictions`, then prints the
        final line; `where`: the devices, as the line names them."""
        if not self.writer:
            return
        stopped = self.stopped()
        path = self.metrics(stopped=stopped)
        export_weights(self.config.out_dir / WEIGHTS_FILE)
        plots = write_plots(
            self.config.out_dir,
            self.framework,
            records_to_json(self.records),
            np.asarray(images),
            np.asarray(labels),
            predictions,
        )
        written = ", ".join(p.name for p in plots)
        target = self.config.stop_at_accuracy
        early = (
            ""
            if stopped is None
            else f", stopped after epoch {stopped} of {self.config.epochs} at >= {100 * target:.2f}%"
        )
        interrupts.now("after writing metrics.json, the weights and the plots")
        print(  # flushed here: a closed stdout then stops the run with its line, not at the interpreter's exit
            f"test accuracy {100 * self.records[-1].test_accuracy:.2f}%{of_test_set(self.config)} on {where}{early}; "
            f"wrote {path}, {WEIGHTS_FILE}, checkpoint, {written}",
            flush=True,
        )

"""TensorBoard scalars of a training run (``--tensorboard DIR``), written the same way by both trainers.

Defined once, here, taking plain floats, so that a PyTorch run and a JAX run write the same tags at the same
steps and overlay in one TensorBoard (``tensorboard --logdir DIR``). The x axis is the global SGD step
(1, 2, ...); the per-epoch scalars sit at their epoch's last step. The events are TFRecord files written
with tensorboardX (pure Python and protobuf), imported only when a writer is made: importing it loads
PyTorch when present, and this package imports no framework (tests/test_architecture.py).

A resumed run (--resume) writes into the same folder from the first step it trains again: TensorBoard
discards whatever an earlier run wrote from that step on (the writer's ``purge_step``), so an epoch that
was logged but not checkpointed before a kill is not shown twice, and the curves continue as one.

TensorBoard reads each folder of event files as one run, and a writer starting at step 1 purges every point
before it: a run into a folder that already holds another run's events (another out-dir, or the same one trained
afresh) writes into a subfolder of its own instead (`run_folder`), named for its out-dir and the time, and says so
in one line; the first run's curves stay as they were.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnist_common.progress import REFRESH_EVERY
from mnist_common.report import EpochRecord

#: Steps between two points of the training-loss curve: the progress bar's interval, so that both show one loss.
LOSS_EVERY = REFRESH_EVERY

#: The tags, the same in both frameworks.
TRAIN_LOSS = "train/loss"  # one step's loss, every LOSS_EVERY steps
EPOCH_TRAIN_LOSS = "train/epoch_loss"  # the mean over the epoch's steps, as metrics.json's train_loss
TEST_LOSS = "test/loss"
TEST_ACCURACY = "test/accuracy"
IMAGES_PER_S = "speed/images_per_s"
CONFIG = "config"  # text: the run's configuration, as in metrics.json


#: The event files' names, as tensorboardX writes them.
EVENTS = "events.out.tfevents.*"


def _owner(framework: str, config: dict[str, Any]) -> tuple[str, str | None]:
    """Which run a CONFIG text belongs to: its framework and out-dir (the real path; None when not recorded)."""
    out_dir = config.get("out_dir")
    return framework, None if out_dir is None else os.path.realpath(out_dir)


def _owners(folder: Path) -> set[tuple[str | None, str | None]]:
    """The runs whose events `folder` holds, by the CONFIG text each writer starts with; (None, None) for a file
    without one that reads (another tool's, or damaged): then it is not this run's."""
    from tensorboardX.proto import event_pb2

    owners: set[tuple[str | None, str | None]] = set()
    for path in folder.glob(EVENTS):
        owner: tuple[str | None, str | None] = (None, None)
        try:
            for record in _records(path):
                value = next(
                    (v for v in event_pb2.Event.FromString(record).summary.value if v.tag.startswith(CONFIG)), None
                )
                if value is not None:
                    config = json.loads(value.tensor.string_val[0].decode())
                    owner = _owner(config.pop("framework", None), config)
                    break
        except (OSError, ValueError, IndexError, AttributeError):  # unreadable: not known to be this run's
            pass
        owners.add(owner)
    return owners


def _latest(folder: Path) -> int:
    return max((p.stat().st_mtime_ns for p in folder.glob(EVENTS)), default=0)


def run_folder(folder: Path, framework: str, config: dict[str, Any], epochs_done: int) -> tuple[Path, str | None]:
    """Where this run's events go, and the line that says so when it is not `folder` itself.

    A resumed run (`epochs_done` > 0) continues in the folder (`folder` or a subfolder) holding its own latest
    events; any run goes into `folder` when it holds no events; otherwise a new subfolder named for its out-dir
    and the time, so that TensorBoard shows it as a run of its own and purges none of the other run's points."""
    folder = Path(folder)
    if epochs_done:
        me = _owner(framework, config)
        candidates = [folder, *sorted(p for p in folder.glob("*/") if p.is_dir())] if folder.is_dir() else []
        mine = [f for f in candidates if me in _owners(f)]
        if mine:
            return max(mine, key=_latest), None
    if not (folder.is_dir() and any(folder.glob(EVENTS))):
        return folder, None
    stem = f"{Path(str(config.get('out_dir') or framework)).name or framework}-{time.strftime('%Y%m%d-%H%M%S')}"
    own, n = folder / stem, 2
    while own.exists():
        own, n = folder / f"{stem}-{n}", n + 1
    return own, f"--tensorboard {folder} holds another run's events; this run's go into {own}, a run of its own"


class TrainingLog:
    """The event files of one trainer process (process 0's in a data-parallel run).

    `epochs_done` epochs of `steps_per_epoch` SGD steps each are already behind the run (a resumed run's);
    the writer starts at the next step and purges what an earlier writer left from it on."""

    def __init__(
        self, folder: Path, framework: str, config: dict[str, Any], steps_per_epoch: int, epochs_done: int = 0
    ) -> None:
        from tensorboardX import SummaryWriter  # loads PyTorch where it is installed: only when a run asks for it

        self.steps_per_epoch = steps_per_epoch
        #: Where the events go (`run_folder`), and the line saying so when another run's events are in `folder`.
        self.folder, self.note = run_folder(folder, framework, config, epochs_done)
        first = epochs_done * steps_per_epoch + 1
        # The file's name holds the second it was made in and this suffix: a resume within the same second must
        # not write over the file of the run it continues (a file starting at the same step holds nothing to keep).
        self.writer = SummaryWriter(
            str(self.folder), purge_step=first, flush_secs=10, filename_suffix=f".from-step-{first}"
        )
        text = json.dumps({"framework": framework, **config}, indent=2)
        self.writer.add_text(CONFIG, "".join(f"    {line}\n" for line in text.splitlines()), global_step=first)

    def epoch(self, record: EpochRecord, losses: Sequence[float]) -> None:
        """Write one epoch: `losses` are its steps' losses, in order; `record` its line of metrics.json."""
        assert len(losses) == self.steps_per_epoch, (len(losses), self.steps_per_epoch)
        start = (record.epoch - 1) * self.steps_per_epoch
        for k, loss in enumerate(losses, start=start + 1):
            if k % LOSS_EVERY == 0:
                self.writer.add_scalar(TRAIN_LOSS, float(loss), global_step=k)
        last = start + self.steps_per_epoch
        for tag, value in (
            (EPOCH_TRAIN_LOSS, record.train_loss),
            (TEST_LOSS, record.test_loss),
            (TEST_ACCURACY, record.test_accuracy),
            (IMAGES_PER_S, record.images_per_s),
        ):
            self.writer.add_scalar(tag, float(value), global_step=last)
        self.writer.flush()  # on disk before the epoch's checkpoint: a resumed run then purges, never loses, it

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _records(path: Path) -> list[bytes]:
    """The records of one TFRecord file: each a length (uint64), its CRC, the bytes, their CRC (CRCs not checked)."""
    data, records, offset = path.read_bytes(), [], 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        records.append(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4
    return records


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in `folder`'s event files as TensorBoard shows it, {tag: [(step, value), ...]} in step order:
    the files in the order written, and a writer's start (``purge_step``) dropping the earlier points from its step
    on. Also the text of CONFIG, as (step, text) pairs under that tag. For tests and notebooks."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, Any]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        for record in _records(path):
            event = event_pb2.Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
                elif value.tag.startswith(CONFIG):
                    scalars.setdefault(CONFIG, []).append((event.step, value.tensor.string_val[0].decode()))
    return {tag: sorted(points, key=lambda p: p[0]) for tag, points in scalars.items()}

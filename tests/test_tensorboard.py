"""--tensorboard (`mnist_common.tensorboard`): the events read back as TensorBoard shows them. In-process, the
writer alone: the tags, the steps, a resumed writer purging what an earlier one wrote from its first step on. And what
both trainers' events must be over one epoch and a --resume to two (checked on tests/test_resume.py's e2e run):
their metrics.json, with the same tags at the same steps in both frameworks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mnist_common import tensorboard as tb
from mnist_common.report import EpochRecord

#: The tags written once per epoch, at its last step.
EPOCH_TAGS = (tb.EPOCH_TRAIN_LOSS, tb.TEST_LOSS, tb.TEST_ACCURACY, tb.IMAGES_PER_S)
STEPS = 2 * tb.LOSS_EVERY + 3  # per epoch: two training-loss points in the first epoch, then at 60, 80, ...


def record(epoch: int, shift: float = 0.0) -> EpochRecord:
    return EpochRecord(epoch, 1.0 / epoch + shift, 0.5 / epoch + shift, 0.9 + epoch / 100, 1.5, 1000.0 * epoch)


def test_the_scalars_read_back_with_their_steps(tmp_path):
    with tb.TrainingLog(tmp_path, "jax", {"lr": 0.1}, STEPS) as log:
        for epoch in (1, 2):
            log.epoch(record(epoch), [float(k) for k in range(STEPS)])
    scalars = tb.read_scalars(tmp_path)
    assert set(scalars) == {
        tb.TRAIN_LOSS,
        tb.EPOCH_TRAIN_LOSS,
        tb.TEST_LOSS,
        tb.TEST_ACCURACY,
        tb.IMAGES_PER_S,
        tb.CONFIG,
    }
    every = tb.LOSS_EVERY
    assert scalars[tb.TRAIN_LOSS] == [(k, float((k - 1) % STEPS)) for k in range(every, 2 * STEPS + 1, every)]
    assert [s for s, _ in scalars[tb.TEST_LOSS]] == [STEPS, 2 * STEPS]  # each epoch at its last step
    assert [v for _, v in scalars[tb.TEST_ACCURACY]] == [np.float32(0.91), np.float32(0.92)]
    (step, text), *_ = scalars[tb.CONFIG]
    assert step == 1 and json.loads(text) == {"framework": "jax", "lr": 0.1}


def test_a_resumed_writer_continues_the_curves_and_purges_what_it_trains_again(tmp_path):
    """The first run logged epochs 1 and 2 but was killed before epoch 2's checkpoint: the resumed run trains epoch
    2 again, and TensorBoard shows the new epoch 2 alone, after the first run's epoch 1."""
    with tb.TrainingLog(tmp_path, "torch", {}, STEPS) as log:
        log.epoch(record(1), [1.0] * STEPS)
        log.epoch(record(2), [2.0] * STEPS)
    with tb.TrainingLog(tmp_path, "torch", {"resume": True}, STEPS, epochs_done=1) as log:
        log.epoch(record(2, shift=1.0), [3.0] * STEPS)
    scalars = tb.read_scalars(tmp_path)
    assert scalars[tb.TEST_LOSS] == [(STEPS, 0.5), (2 * STEPS, 1.25)]
    every = tb.LOSS_EVERY
    assert scalars[tb.TRAIN_LOSS] == [(k, 1.0) for k in range(every, STEPS + 1, every)] + [
        (k, 3.0) for k in range(every, 2 * STEPS + 1, every) if k > STEPS
    ]
    assert [s for s, _ in scalars[tb.CONFIG]] == [1, STEPS + 1]


def test_a_second_run_into_a_folder_holding_another_runs_events_is_a_run_of_its_own(tmp_path):
    """TensorBoard reads each folder of event files as one run: the second run's events go into a subfolder named
    for it, said in one line, and the first run's curves are shown as they were."""
    with tb.TrainingLog(tmp_path, "torch", {"out_dir": "runs/first"}, STEPS) as log:
        log.epoch(record(1), [1.0] * STEPS)
        log.epoch(record(2), [2.0] * STEPS)
    first = tb.read_scalars(tmp_path)
    with tb.TrainingLog(tmp_path, "jax", {"out_dir": "runs/second"}, STEPS) as log:
        log.epoch(record(1, shift=1.0), [3.0] * STEPS)
    assert log.folder.parent == tmp_path and log.folder.name.startswith("second-"), log.folder
    assert log.note == (
        f"--tensorboard {tmp_path} holds another run's events; this run's go into {log.folder}, a run of its own"
    )
    assert tb.read_scalars(tmp_path) == first
    assert tb.read_scalars(log.folder)[tb.TEST_LOSS] == [(STEPS, 1.5)]


def test_a_fresh_run_into_the_same_out_dir_again_does_not_purge_the_earlier_curves(tmp_path):
    """--overwrite (or a run whose first epoch never reached its checkpoint) trains from step 1 again: into the same
    folder, its writer would make TensorBoard drop every point of the earlier run."""
    config = {"out_dir": "runs/torch"}
    with tb.TrainingLog(tmp_path, "torch", config, STEPS) as log:
        log.epoch(record(1), [1.0] * STEPS)
    with tb.TrainingLog(tmp_path, "torch", {**config, "overwrite": True}, STEPS) as again:
        again.epoch(record(1, shift=1.0), [3.0] * STEPS)
    assert again.folder.parent == tmp_path and again.folder.name.startswith("torch-")
    assert tb.read_scalars(tmp_path)[tb.TEST_LOSS] == [(STEPS, 0.5)]
    assert tb.read_scalars(again.folder)[tb.TEST_LOSS] == [(STEPS, 1.5)]


def test_a_resumed_run_continues_its_own_curves_in_the_subfolder_it_was_given(tmp_path):
    with tb.TrainingLog(tmp_path, "torch", {"out_dir": "runs/first"}, STEPS) as log:
        log.epoch(record(1), [1.0] * STEPS)
    with tb.TrainingLog(tmp_path, "torch", {"out_dir": "runs/second"}, STEPS) as second:
        second.epoch(record(1, shift=1.0), [2.0] * STEPS)
    with tb.TrainingLog(tmp_path, "torch", {"out_dir": "runs/second", "resume": True}, STEPS, 1) as resumed:
        resumed.epoch(record(2, shift=1.0), [3.0] * STEPS)
    with tb.TrainingLog(tmp_path, "torch", {"out_dir": "runs/first", "resume": True}, STEPS, 1) as first:
        first.epoch(record(2), [4.0] * STEPS)
    assert (resumed.folder, resumed.note, first.folder, first.note) == (second.folder, None, tmp_path, None)
    assert tb.read_scalars(second.folder)[tb.TEST_LOSS] == [(STEPS, 1.5), (2 * STEPS, 1.25)]
    assert tb.read_scalars(tmp_path)[tb.TEST_LOSS] == [(STEPS, 0.5), (2 * STEPS, 0.25)]


def test_the_run_prints_where_its_events_went(tmp_path, capsys):
    from mnist_common.config import TrainConfig
    from mnist_common.run import Prepared, Run

    tb.TrainingLog(tmp_path / "tb", "jax", {"out_dir": "runs/jax"}, STEPS).close()
    config = TrainConfig(out_dir=tmp_path / "mine", tensorboard=tmp_path / "tb").for_framework("torch")
    with Run(config, "torch", True, [], [], "cpu", {}, Prepared(None, None), {}) as run:
        assert run.log is not None and run.log.folder.name.startswith("mine-")
    assert capsys.readouterr() == (f"{run.log.note}\n", "")


def assert_events_are_the_runs_metrics(folder: Path, metrics: dict, framework: str, steps_per_epoch: int) -> None:
    """The events `--tensorboard folder` wrote over a run (one epoch, then --resume to the last) are its metrics.json,
    at the tags and steps both frameworks share (so two runs overlay). tests/test_resume.py's e2e run writes them,
    in a run whose weights it checks too."""
    scalars = tb.read_scalars(folder)
    epochs = len(metrics["epochs"])
    for tag, field in zip(EPOCH_TAGS, ("train_loss", "test_loss", "test_accuracy", "images_per_s"), strict=True):
        assert scalars[tag] == [(e["epoch"] * steps_per_epoch, np.float32(e[field])) for e in metrics["epochs"]], tag
    config_texts = [json.loads(text) for _, text in scalars[tb.CONFIG]]
    assert [c["resume"] for c in config_texts] == [False, True] and config_texts[1]["framework"] == framework
    assert {tag: [s for s, _ in points] for tag, points in scalars.items()} == {  # the same in both frameworks
        tb.TRAIN_LOSS: list(range(tb.LOSS_EVERY, epochs * steps_per_epoch + 1, tb.LOSS_EVERY)),
        **{tag: [e * steps_per_epoch for e in range(1, epochs + 1)] for tag in EPOCH_TAGS},
        tb.CONFIG: [1, steps_per_epoch + 1],
    }


def test_the_folder_of_an_installed_writer_is_created(tmp_path):
    folder = tmp_path / "new" / "deeper"
    tb.TrainingLog(folder, "jax", {}, 1).close()
    assert list(folder.glob("events.out.tfevents.*"))


def test_read_scalars_of_an_empty_folder_is_empty(tmp_path):
    assert tb.read_scalars(Path(tmp_path)) == {}

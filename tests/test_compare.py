"""`python -m mnist_common.compare` refuses anything that is not a trainer's metrics.json with one line, and warns
when the runs it is asked to overlay were not trained alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mnist_common import compare

#: A trainer's metrics.json as `report.write_metrics` writes it, shortened to what the cases below change.
VALID = {
    "framework": "torch",
    "config": {
        "epochs": 2,
        "batch_size": 128,
        "lr": 0.1,
        "momentum": 0.9,
        "seed": 0,
        "precision": "float32",
        "train_size": 6400,
    },
    "epochs": [
        {
            "epoch": 1,
            "train_loss": 0.9,
            "test_loss": 0.4,
            "test_accuracy": 0.87,
            "seconds": 2.0,
            "images_per_s": 3200.0,
        },
        {
            "epoch": 2,
            "train_loss": 0.3,
            "test_loss": 0.3,
            "test_accuracy": 0.91,
            "seconds": 2.0,
            "images_per_s": 3200.0,
        },
    ],
    "test_accuracy": 0.91,
    "diverged": None,
}


def edited(change) -> str:
    """VALID as JSON text after ``change(metrics)`` edited a deep copy of it."""
    metrics = json.loads(json.dumps(VALID))
    change(metrics)
    return json.dumps(metrics)


def replaced(field: str, text: str) -> str:
    """VALID as JSON text whose first epoch's ``field`` is the raw JSON ``text`` (which json.dumps would not write)."""
    return edited(lambda m: m["epochs"][0].update({field: "@@"})).replace('"@@"', text)


def set_epoch_field(field, value):
    return lambda m: m["epochs"][1].update({field: value})


def make_fifo(path):
    os.mkfifo(path)


def make_unreadable(path):
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its permissions")
    path.write_text(json.dumps(VALID))
    path.chmod(0)


def make_too_large(path):
    with open(path, "wb") as file:  # sparse: 17 MiB of zero bytes, without writing them
        file.truncate(17 * 2**20)


def make_directory_holding_metrics(path):
    path.mkdir()
    (path / "metrics.json").write_text(json.dumps(VALID))


# (id, what the file holds: JSON text, bytes, a function making the path, or None for no file, the expected words)
MALFORMED = [
    ("missing file", None, "does not exist; pass the metrics.json that"),
    ("a directory", lambda path: path.mkdir(), "is a directory; pass the metrics.json"),
    ("a run's directory", make_directory_holding_metrics, "is a directory (it holds one: pass DIR/metrics.json)"),
    ("a pipe", make_fifo, "is not a regular file; pass the metrics.json"),
    ("unreadable", make_unreadable, "cannot be read (Permission denied)"),
    ("a path through a file", lambda path: None, "cannot be read (Not a directory)"),
    ("larger than 16 MiB", make_too_large, "(it is larger than 16 MiB, expected a few kilobytes)"),
    ("empty", "", "(it is empty, expected a JSON object)"),
    ("not JSON", "epoch 1 train loss 0.9", "(it is not JSON: Expecting value at line 1 column 1)"),
    ("cut short", json.dumps(VALID)[:150], "(it is not JSON: "),
    (
        "binary garbage",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        "(byte 0x89 at offset 0 is not UTF-8 text, expected JSON)",
    ),
    ("a JSON list", "[1, 2]", '(it holds a list, expected a JSON object with "epochs")'),
    ("a JSON string", '"metrics"', '(it holds "metrics", expected a JSON object with "epochs")'),
    ("JSON null", "null", '(it holds null, expected a JSON object with "epochs")'),
    ("no epochs", edited(lambda m: m.pop("epochs")), '(it has no "epochs", expected a list of one record per epoch)'),
    ("epochs not a list", edited(lambda m: m.update(epochs={"1": 0.9})), '("epochs" is an object, expected a list'),
    ("no epoch recorded", edited(lambda m: m.update(epochs=[])), '("epochs" is empty, expected at least one'),
    (
        "diverged in epoch 1",
        edited(lambda m: m.update(epochs=[], diverged={"epoch": 1})),
        '("epochs" is empty: the run diverged in its first epoch, expected at least one',
    ),
    (
        "an epoch not an object",
        edited(lambda m: m.update(epochs=[0.9, 0.3])),
        '("epochs"[0] is 0.9, expected an object with epoch',
    ),
    (
        "a missing field",
        edited(lambda m: m["epochs"][1].pop("test_loss")),
        '("epochs"[1] has no "test_loss", expected the fields epoch, train_loss, test_loss, test_accuracy)',
    ),
    (
        "a string",
        edited(set_epoch_field("test_accuracy", "0.91")),
        '("epochs"[1]["test_accuracy"] is "0.91", expected a finite number)',
    ),
    (
        "null",
        edited(set_epoch_field("train_loss", None)),
        '("epochs"[1]["train_loss"] is null, expected a finite number)',
    ),
    (
        "a boolean",
        edited(set_epoch_field("test_loss", True)),
        '("epochs"[1]["test_loss"] is true, expected a finite number)',
    ),
    (
        "a list",
        edited(set_epoch_field("test_loss", [0.3])),
        '("epochs"[1]["test_loss"] is a list, expected a finite number)',
    ),
    ("NaN", replaced("test_loss", "NaN"), "(it holds NaN, which is not a JSON number)"),
    ("Infinity", replaced("train_loss", "-Infinity"), "(it holds -Infinity, which is not a JSON number)"),
    ("1e999", replaced("test_loss", "1e999"), '("epochs"[0]["test_loss"] is inf, expected a finite number)'),
    (
        "a 400-digit integer",
        replaced("train_loss", "1" + "0" * 400),
        '("epochs"[0]["train_loss"] is an integer of 401 digits, expected a finite number)',
    ),
    ("a 5000-digit integer", replaced("epoch", "9" * 5000), "(it holds an integer of more than 4300 digits"),
    ("nested 100000 deep", "[" * 100_000, "(it nests lists or objects too deeply to read, expected a JSON object)"),
    (
        "epochs out of order",
        edited(set_epoch_field("epoch", 1)),
        '("epochs"[1]["epoch"] is 1, expected a whole number above 1',
    ),
    ("a fractional epoch", replaced("epoch", "0.5"), '("epochs"[0]["epoch"] is 0.5, expected a whole number above 0'),
    (
        "a negative loss",
        edited(set_epoch_field("test_loss", -0.3)),
        '("epochs"[1]["test_loss"] is -0.3, expected a cross-entropy loss',
    ),
    (
        "accuracy in percent",
        edited(set_epoch_field("test_accuracy", 91.0)),
        '("epochs"[1]["test_accuracy"] is 91.0, expected a fraction from 0 to 1)',
    ),
    (
        "framework not a name",
        edited(lambda m: m.update(framework=7)),
        '("framework" is 7, expected a name such as "torch"',
    ),
    (
        "config not an object",
        edited(lambda m: m.update(config=[0.1])),
        '("config" is a list, expected an object of the run',
    ),
]


def make(path, content) -> None:
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        content(path)


@pytest.mark.parametrize("content, expected", [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_a_malformed_metrics_file_is_refused_with_one_line(content, expected, tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    if expected.endswith("(Not a directory)"):
        bad = good / "metrics.json"
    good.write_text(json.dumps(VALID))
    make(bad, content)
    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(good), str(bad), "--out", str(tmp_path / "c.png")])
    message = exit_info.value.code  # a string: Python prints it on stderr and exits with status 1
    assert isinstance(message, str) and message.startswith(f"error: {bad} ") and "\n" not in message, message
    assert expected in message and "Traceback" not in message, message
    assert message.endswith("`python -m mnist_torch.train` or `python -m mnist_jax.train` wrote")
    assert capsys.readouterr() == ("", "")  # nothing else printed, no warning
    assert not (tmp_path / "c.png").exists()


@pytest.mark.e2e
def test_the_command_line_prints_one_error_line_and_exits_1(tmp_path):
    (tmp_path / "metrics.json").write_text(replaced("test_loss", "NaN"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_common.compare",
            str(tmp_path / "metrics.json"),
            "--out",
            str(tmp_path / "c.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'metrics.json'} is not a trainer's metrics.json (it holds "
        f"NaN, which is not a JSON number); pass the metrics.json that `python -m "
        f"mnist_torch.train` or `python -m mnist_jax.train` wrote"
    ]


def test_a_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m mnist_common.compare: error: the following arguments are required: metrics"
    )


@pytest.mark.parametrize("where", ["under a file", "a directory"])
def test_an_unwritable_out_is_one_line(where, tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(json.dumps(VALID))
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    out = tmp_path / ("file/c.png" if where == "under a file" else "folder")
    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(tmp_path / "metrics.json"), "--out", str(out)])
    message = exit_info.value.code
    assert message.startswith(f"error: cannot write {out} (") and "\n" not in message, message
    assert message.endswith("); pass --out a PNG path in a writable folder")
    assert capsys.readouterr() == ("", "") and not list(tmp_path.glob("**/*.partial"))


def test_the_same_file_twice_is_plotted_twice(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(json.dumps(VALID))
    compare.main([str(tmp_path / "metrics.json")] * 3 + ["--out", str(tmp_path / "c.png")])
    assert capsys.readouterr() == (
        f"final test accuracy: torch 91.00%, torch ({tmp_path}) 91.00%, "
        f"torch ({tmp_path}) #2 91.00%; wrote {tmp_path / 'c.png'}\n",
        "",
    )


def test_runs_trained_differently_are_plotted_behind_one_warning(trained_run, tmp_path, capsys):
    torch_metrics, jax_metrics = (trained_run(fw) / "metrics.json" for fw in ("torch", "jax"))
    capsys.readouterr()  # drop the training fixture's output
    compare.main([str(torch_metrics), str(jax_metrics), "--out", str(tmp_path / "alike.png")])
    alike = capsys.readouterr()
    assert alike.err == "" and alike.out.startswith("final test accuracy: torch ")  # trained alike: no warning
    older = json.loads(jax_metrics.read_text())
    del older["config"]["test_size"]  # a file from before --test-size: evaluated on the whole test set, as these
    (tmp_path / "older.json").write_text(json.dumps(older))
    compare.main([str(torch_metrics), str(tmp_path / "older.json"), "--out", str(tmp_path / "older.png")])
    assert capsys.readouterr().err == ""

    other = json.loads(jax_metrics.read_text())
    other["config"].update(lr=0.05, seed=1, test_size=1000)
    del other["config"]["precision"]
    other["epochs"] = other["epochs"][:1]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.json").write_text(json.dumps(other))
    changed = tmp_path / "other" / "metrics.json"
    compare.main([str(torch_metrics), str(changed), "--out", str(tmp_path / "unlike.png")])
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"warning: these runs differ in test_size (10000 in {torch_metrics}, 1000 in {changed}); "
        f"lr (0.1 in {torch_metrics}, 0.05 in {changed}); seed (0 in {torch_metrics}, "
        f'1 in {changed}); precision ("float32" in {torch_metrics}, not recorded in {changed}); epochs (2 in '
        f"{torch_metrics}, 1 in {changed}): their curves are plotted together as asked, "
        "but do not compare like with like"
    ]
    assert out.startswith("final test accuracy: torch ") and out.endswith(f"; wrote {tmp_path / 'unlike.png'}\n")
    assert (tmp_path / "unlike.png").stat().st_size > 10_000


#: What --out may not name: an input, or a file of a training run (its results, lock or plots), or a new file there
#: that is not a PNG; each with the file the case plants in the run's folder (None: nothing there).
OVER_A_RUN = {
    "an input": ("metrics.json", None),
    "the run's weights": ("weights.safetensors", b"weights"),
    "the run's checkpoint": ("checkpoint.pt", b"MNIST-CHECKPOINT"),
    "the run's lock": (".lock", b"pid 1"),
    "the run's curves": ("curves.png", b"\x89PNG curves"),
    "a new file that is not a PNG": ("notes.txt", None),
    "an input by another name": ("link.json", None),
}


@pytest.mark.parametrize("case", OVER_A_RUN)
def test_out_naming_an_input_or_a_runs_file_is_refused_in_one_line_and_changes_nothing(case, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(VALID))
    name, planted = OVER_A_RUN[case]
    if planted is not None:
        (run / name).write_bytes(planted)
    if case == "an input by another name":
        (run / name).symlink_to(run / "metrics.json")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(run / "metrics.json"), str(run / "metrics.json"), "--out", str(run / name)])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith(f"error: --out {run / name} ") and "\n" not in message
    assert message.endswith("; pass --out a new .png path, such as runs/compare.png")
    why = "is one of the metrics.json files read" if case in ("an input", "an input by another name") else str(run)
    assert why in message, message
    assert capsys.readouterr() == ("", "")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_new_png_beside_a_run_is_written_and_only_there(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(VALID))
    compare.main([str(run / "metrics.json"), "--out", str(run / "compare.png")])
    assert capsys.readouterr().out.endswith(f"; wrote {run / 'compare.png'}\n")
    assert sorted(p.name for p in run.iterdir()) == ["compare.png", "metrics.json"]

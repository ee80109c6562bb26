"""Overlay the curves of two (or more) runs from their metrics.json files, in one figure.

Usage: python -m mnist_common.compare runs/torch/metrics.json runs/jax/metrics.json [--out runs/compare.png]

Framework-neutral: it reads only metrics.json, whose schema both trainers share (`report.write_metrics`).
The files may come from anyone, so each is checked before it is plotted: anything that is not a trainer's
metrics.json is refused with one line naming the file and what was expected, never a traceback or a wrong
plot. Runs whose settings differ are plotted when asked, behind one warning line naming the settings. --out never
writes over one of the files read, nor over a run's own files (`mnist_common.outdir.run_file_problem`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

if __name__ == "__main__":  # before matplotlib loads: Ctrl-C, SIGTERM, SIGHUP... from here on: one line, exit 128 + N
    from mnist_common import interrupts

    interrupts.install("python -m mnist_common.compare")

from mnist_common.config import IMPLICIT_SETTINGS
from mnist_common.errors import ProjectError
from mnist_common.files import written_over
from mnist_common.outdir import run_file_problem
from mnist_common.plots import plot_curves, save_figure

#: The per-epoch fields compare plots, each a finite number (``epoch`` a whole one).
EPOCH_FIELDS = ("epoch", "train_loss", "test_loss", "test_accuracy")
#: The settings under which two runs' curves compare like with like: the same training and test images, batches,
#: optimizer, initialization and arithmetic. Device and mode are left out: they change the speed, and the
#: curves only by rounding.
COMPARABLE_SETTINGS = ("train_size", "test_size", "batch_size", "lr", "momentum", "seed", "precision")
#: A trainer writes about 150 bytes per epoch; a file larger than this is not a metrics.json, and is not read whole.
MAX_BYTES = 16 * 2**20
#: Where the figure goes unless --out says otherwise (runs/ is git-ignored).
DEFAULT_OUT = Path("runs") / "compare.png"

_EXPECTED = "pass the metrics.json that `python -m mnist_torch.train` or `python -m mnist_jax.train` wrote"


#: What `mismatch` shows for a setting a file does not record.
_NOT_RECORDED = object()


class MetricsError(ProjectError, ValueError):
    """The file is not a trainer's metrics.json; the message names it, what is wrong and what was expected."""


def _one_line(text: str) -> str:
    """Messages quote file names and values, which may hold line breaks; the error stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _describe(value: Any) -> str:
    """A JSON value as a message shows it: short, whatever it is."""
    if value is _NOT_RECORDED:
        return "not recorded"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int) and abs(value) >= 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 30 else value[:30] + "...")
    return "a list" if isinstance(value, list) else "an object"


def _not_metrics(path: Path, what: str) -> MetricsError:
    return MetricsError(f"{path} is not a trainer's metrics.json ({what}); {_EXPECTED}")


def _refuse_constant(name: str) -> NoReturn:
    """Python's json reads NaN and Infinity, which are not JSON; the trainers never write them (strict JSON)."""
    raise MetricsError(f"it holds {name}, which is not a JSON number")


def _read_bytes(path: Path) -> bytes:
    try:
        kind = os.stat(path).st_mode
    except FileNotFoundError:
        raise MetricsError(f"{path} does not exist; {_EXPECTED}") from None
    except OSError as err:
        raise MetricsError(f"{path} cannot be read ({err.strerror or err}); {_EXPECTED}") from None
    if stat.S_ISDIR(kind):
        inside = " (it holds one: pass DIR/metrics.json)" if (path / "metrics.json").is_file() else ""
        raise MetricsError(f"{path} is a directory{inside}; {_EXPECTED}")
    if not stat.S_ISREG(kind):  # a pipe or a device would block or never end
        raise MetricsError(f"{path} is not a regular file; {_EXPECTED}")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as err:
        raise MetricsError(f"{path} cannot be read ({err.strerror or err}); {_EXPECTED}") from None
    if len(data) > MAX_BYTES:
        raise _not_metrics(path, f"it is larger than {MAX_BYTES // 2**20} MiB, expected a few kilobytes")
    return data


def _parse(path: Path, data: bytes) -> Any:
    if not data.strip():
        raise _not_metrics(path, "it is empty, expected a JSON object")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_metrics(
            path, f"byte 0x{data[err.start]:02x} at offset {err.start} is not UTF-8 text, expected JSON"
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except MetricsError as err:
        raise _not_metrics(path, str(err)) from None
    except json.JSONDecodeError as err:
        raise _not_metrics(path, f"it is not JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise _not_metrics(
            path,
            f"it holds an integer of more than {sys.get_int_max_str_digits()} digits, "
            f"expected numbers a float can hold",
        ) from None
    except RecursionError:
        raise _not_metrics(path, "it nests lists or objects too deeply to read, expected a JSON object") from None


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite JSON number (not a boolean, not too large for a float), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _check_epochs(path: Path, epochs: Any, diverged: Any) -> None:
    if not isinstance(epochs, list):
        raise _not_metrics(path, f'"epochs" is {_describe(epochs)}, expected a list of one record per epoch')
    if not epochs:
        why = ": the run diverged in its first epoch" if diverged else ""
        raise _not_metrics(path, f'"epochs" is empty{why}, expected at least one epoch\'s record to plot')
    fields = ", ".join(EPOCH_FIELDS)
    previous = 0
    for i, record in enumerate(epochs):
        if not isinstance(record, dict):
            raise _not_metrics(path, f'"epochs"[{i}] is {_describe(record)}, expected an object with {fields}')
        for field in EPOCH_FIELDS:
            where = f'"epochs"[{i}]["{field}"]'
            if field not in record:
                raise _not_metrics(path, f'"epochs"[{i}] has no "{field}", expected the fields {fields}')
            value = record[field]
            number = _finite(value)
            if number is None:
                raise _not_metrics(path, f"{where} is {_describe(value)}, expected a finite number")
            if field == "epoch" and (not isinstance(value, int) or number <= previous):
                raise _not_metrics(
                    path,
                    f"{where} is {_describe(value)}, expected a whole number above {previous} "
                    f"(epochs count from 1, in order)",
                )
            if field.endswith("_loss") and number < 0:
                raise _not_metrics(path, f"{where} is {_describe(value)}, expected a cross-entropy loss (0 or more)")
            if field == "test_accuracy" and not 0 <= number <= 1:
                raise _not_metrics(path, f"{where} is {_describe(value)}, expected a fraction from 0 to 1")
        previous = record["epoch"]


def read_metrics(path: Path | str) -> dict[str, Any]:
    """A trainer's metrics.json, checked for everything compare reads; `MetricsError` naming the file otherwise."""
    path = Path(path)
    metrics = _parse(path, _read_bytes(path))
    if not isinstance(metrics, dict):
        raise _not_metrics(path, f'it holds {_describe(metrics)}, expected a JSON object with "epochs"')
    if "epochs" not in metrics:
        raise _not_metrics(path, 'it has no "epochs", expected a list of one record per epoch')
    _check_epochs(path, metrics["epochs"], metrics.get("diverged"))
    framework = metrics.get("framework", "torch")
    if not (isinstance(framework, str) and framework.strip()):
        raise _not_metrics(path, f'"framework" is {_describe(framework)}, expected a name such as "torch" or "jax"')
    if not isinstance(metrics.get("config", {}), dict):
        raise _not_metrics(
            path, f'"config" is {_describe(metrics["config"])}, expected an object of the run\'s settings'
        )
    return metrics


def run_label(metrics: dict[str, Any], path: Path, taken: set[str]) -> str:
    """The framework's name, or framework (folder) when two runs share a framework; numbered if still taken
    (the same file passed twice), so that no run silently replaces another in the plot."""
    label = metrics.get("framework", Path(path).parent.name)
    if label in taken:
        label = f"{label} ({Path(path).parent})"
    unique, n = label, 2
    while unique in taken:
        unique, n = f"{label} #{n}", n + 1
    return unique


def mismatch(runs: Sequence[tuple[Path, dict[str, Any]]]) -> str | None:
    """One line naming the settings (`COMPARABLE_SETTINGS`, and the number of epochs) in which the runs differ, each
    with every file's value; None when they agree. Curves of unlike runs differ for reasons other than the
    framework, so whoever compares them is told."""

    def value(metrics: dict[str, Any], key: str) -> Any:
        if key == "epochs":
            return len(metrics["epochs"])
        config = metrics.get("config")
        if not isinstance(config, dict):
            return _NOT_RECORDED
        return config.get(key, IMPLICIT_SETTINGS.get(key, _NOT_RECORDED))  # a file from before the setting existed

    differing = []
    for key in (*COMPARABLE_SETTINGS, "epochs"):
        values = [value(metrics, key) for _, metrics in runs]
        if any(v != values[0] for v in values):
            differing.append(f"{key} ({', '.join(f'{_describe(v)} in {path}' for v, (path, _) in zip(values, runs))})")
    if not differing:
        return None
    return (
        f"these runs differ in {'; '.join(differing)}: their curves are plotted together as asked, but do not "
        f"compare like with like"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m mnist_common.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "metrics", nargs="+", type=Path, help="metrics.json files, e.g. runs/torch/metrics.json runs/jax/metrics.json"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="the PNG to write (runs/ is git-ignored): never one of the metrics.json files, nor a file of a run",
    )
    args = parser.parse_args(argv)
    runs: dict[str, Any] = {}
    read: list[tuple[Path, dict[str, Any]]] = []
    try:
        for path in args.metrics:
            metrics = read_metrics(path)
            read.append((path, metrics))
            runs[run_label(metrics, path, set(runs))] = metrics["epochs"]
    except ProjectError as err:  # the project's own errors (MetricsError): their message is the whole line
        sys.exit(f"error: {_one_line(str(err))}")
    warning = mismatch(read)
    if warning:
        print(f"warning: {_one_line(warning)}", file=sys.stderr)

    def unwritable(why: object) -> str:
        return _one_line(f"error: cannot write {args.out} ({why}); pass --out a PNG path in a writable folder")

    if args.out.is_dir():  # refused before rendering: replacing a directory fails only after the PNG is written
        sys.exit(unwritable("it is a directory"))
    over = written_over([args.out], args.metrics)
    problem = f"is one of the metrics.json files read ({over[1]})" if over else run_file_problem(args.out)
    if problem is not None:  # the PNG would replace a run's file: refused before anything is written
        sys.exit(_one_line(f"error: --out {args.out} {problem}; pass --out a new .png path, such as {DEFAULT_OUT}"))
    try:
        save_figure(plot_curves(runs), args.out)
    except OSError as err:
        sys.exit(unwritable(err.strerror or err))
    summary = ", ".join(f"{name} {100 * epochs[-1]['test_accuracy']:.2f}%" for name, epochs in runs.items())
    print(f"final test accuracy: {summary}; wrote {args.out}")


if __name__ == "__main__":
    main()

"""Turn pytest-benchmark JSON into Markdown tables and a PNG bar chart with error bars.

Usage: python -m benchmarks.report RESULTS.json [MORE.json ...] [--out-dir DIR] [--name NAME] [--title TEXT]
Writes DIR/NAME.md and DIR/NAME.png (NAME: the first JSON's stem) and prints the Markdown; given
several JSON files (the stages of `benchmarks/gpu_run.sh`), it also writes their rows merged into
DIR/NAME.json. Every figure carries its 95% interval where its rounds allow one; ratios are paired
(from rounds that ran side by side, `benchmarks.stats`) and compare each variant with PyTorch eager on
the same device, mode, batch size and precision; goals are judged on the interval's lower end.
Results from a dirty tree, or from a commit this repository does not know, are shown as such. A damaged record
is named in one line (exit 1), never left out of its table; no file written is one of the files read.

`python -m benchmarks.report --readme` rewrites, in place, the generated blocks of README.md and
docs/benchmarks.md from the committed benchmarks/results/NAME.json: between `<!-- results:NAME begin -->`
and `<!-- results:NAME end -->` the headline table with the settings it was measured under, between
`<!-- report:NAME begin -->` and `<!-- report:NAME end -->` the whole report. With `--check` it writes
nothing and exits 1 naming each block that differs from what the committed results give.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import stats  # noqa: E402
from benchmarks.conditions import REPO  # noqa: E402
from mnist_common.files import written_over  # noqa: E402

BASELINE = "torch_eager"

#: Floating-point operations per image of the model's training step (forward, backward) and of its
#: forward pass, by PyTorch's FlopCounterMode at batch 128 (3.509 and 1.189 GFLOP per batch): the same
#: work for every variant, whatever it skips (XLA's own count of its step is 3.33 GFLOP: no input
#: gradient for conv1). Multiplied by images/s they give the achieved GFLOP/s.
FLOP_PER_IMAGE = {"train": 27.41e6, "eval": 9.288e6}

#: Modes with their own table: not images per second of a batch.
OWN_TABLE = ("accuracy", "latency", "overhead", "peak", "scaling", "cold_start", "memory")

#: Each trainer's own path through the steps, per device: what `python -m mnist_jax.train` runs, and
#: PyTorch's fastest mode there. The goals compare them.
JAX_TRAINER_PATH = {"cpu": "jax_scan_unrolled", "cuda": "jax_epoch"}
TORCH_BEST = {"cpu": "torch_compile_step", "cuda": "torch_cudagraph"}
#: (device, mode, faster variant, slower variant, goal): judged in every comparison where both ran.
GOALS = [
    ("cpu", "train", JAX_TRAINER_PATH["cpu"], TORCH_BEST["cpu"], 1.0),
    ("cpu", "train", JAX_TRAINER_PATH["cpu"], "torch_compile", 1.0),  # the model through torch.compile, as written
    ("cpu", "train", TORCH_BEST["cpu"], "torch_compile", 1.2),  # the equal-effort issue's goal for PyTorch's best
    ("cpu", "train", JAX_TRAINER_PATH["cpu"], BASELINE, 1.0),
    ("cuda", "train", JAX_TRAINER_PATH["cuda"], TORCH_BEST["cuda"], 1.0),
    ("cuda", "train", TORCH_BEST["cuda"], BASELINE, 3.0),
]


class ReportError(ValueError):
    """Input the report cannot use; the message says what and how to make it."""


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(
            f"cannot read {path} ({err}); expected the file written by "
            f"`pytest benchmarks --benchmark-only --benchmark-json {path}`"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks", []), list):
        raise ReportError(
            f'{path} is JSON but not pytest-benchmark\'s (no list under "benchmarks"); expected the file '
            f"written by `pytest benchmarks --benchmark-only --benchmark-json {path}`"
        )
    return data


def merge(documents: list[dict]) -> dict:
    """One pytest-benchmark document holding every benchmark of `documents`, dated by the first."""
    return {**documents[0], "benchmarks": [b for d in documents for b in d.get("benchmarks", [])]}


#: The modes the report knows: the throughput table's, then those with a table of their own.
MODES = ("train", "eval", *OWN_TABLE)
#: What each mode's table reads from a row: alternatives of {field: kind}, the first whose first field the row has
#: (else the last). A row that lacks one, or holds another kind, is damaged: named, never left out of its table.
_THROUGHPUT = (
    {"not_run": "text", "batch_size": "number", "precision": "text"},
    {"images_per_s": "number", "batch_size": "number", "precision": "text", "compile_seconds": "number or null"},
)
RECORD_FIELDS: dict[str, tuple[dict[str, str], ...]] = {
    "train": _THROUGHPUT,
    "eval": _THROUGHPUT,
    "accuracy": (
        {
            "epochs": "number",
            "test_accuracy": "number",
            "train_seconds": "number",
            "compile_seconds": "number or null",
            "original_accuracy": "number",
            "precision": "text",
        },
        {
            "seeds_run": "number",
            "seeds_planned": "number",
            "reached_99": "number",
            "final_accuracy": "object",
            "seconds_per_epoch": "object",
            "compile_seconds": "object",
            "original_accuracy": "number",
            "setting": "text",
            "precision": "text",
        },
    ),
    "latency": ({"latency_p50_ms": "number", "latency_p99_ms": "number", "compile_seconds": "number or null"},),
    "overhead": ({"overhead_us": "number", "compile_seconds": "number or null"},),
    "peak": ({"gflops": "number"},),
    "scaling": ({"images_per_s": "number", "devices": "number", "processes": "number"},),
    "cold_start": (
        {"cold_compile_s": "list", "warm_compile_s": "list", "compiled_step_s": "number", "eager_step_s": "number"},
    ),
    "memory": ({"measured_mode": "text", "batch_size": "number"},),
}
_KINDS = {
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "number or null": lambda v: v is None or _KINDS["number"](v),
    "text": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
}


def _shown(value: object) -> str:
    """A JSON value as a message shows it: short, on one line."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:40] + "..."


def record_problem(row: dict) -> str | None:
    """What is wrong with a row its mode's table reads (`RECORD_FIELDS`), or None."""
    if row["mode"] not in RECORD_FIELDS:
        return f"mode {_shown(row['mode'])} is not one of {', '.join(MODES)}"
    alternatives = RECORD_FIELDS[row["mode"]]
    fields = next((a for a in alternatives if next(iter(a)) in row), alternatives[-1])
    if missing := [k for k in fields if k not in row]:
        return f"it has no {', '.join(missing)}"
    for key, kind in fields.items():
        if not _KINDS[kind](row[key]):
            return f"{key} is {_shown(row[key])}, expected {'a' if kind[0] not in 'ao' else 'an'} {kind}"
    return None


def rows_of(data: dict, source: str) -> tuple[list[dict], str]:
    """One dict per variant: a comparison's rows each get the comparison's common fields (device, versions ...).
    A damaged record (not an object, or lacking what its table reads) is a `ReportError` naming it: left out,
    it would take its row, or its whole table, with it without a word."""

    def damaged(where: str, what: str) -> ReportError:
        return ReportError(
            f"{source} holds a damaged record, {where}, which the report cannot read ({what}); expected one "
            "written by this project's benchmarks: run it again, or remove the record"
        )

    rows, places = [], []
    for i, b in enumerate(data.get("benchmarks", [])):
        name = b.get("name") if isinstance(b, dict) else None
        where = f"benchmark {i}" + (f" {json.dumps(name)}" if isinstance(name, str) else "")
        info = b.get("extra_info") if isinstance(b, dict) else b
        if not isinstance(info, dict):
            raise damaged(
                where, f"{'it' if not isinstance(b, dict) else 'extra_info'} is {_shown(info)}, expected an object"
            )
        if not info:  # a benchmark that recorded nothing: nothing to show
            continue
        if not isinstance(info.get("rows", []), list):
            raise damaged(where, f"rows is {_shown(info['rows'])}, expected a list")
        if "rows" not in info and not info.get("variant"):
            raise damaged(where, "it has neither rows nor a variant")
        common = {k: v for k, v in info.items() if k != "rows"}
        for j, row in enumerate(info.get("rows", [])):
            if not isinstance(row, dict):
                raise damaged(f"{where} row {j}", f"it is {_shown(row)}, expected an object")
            rows.append({**common, **row})
            places.append(f"{where} row {j}")
        if info.get("variant"):
            rows.append(info)
            places.append(where)
    if not rows:
        raise ReportError(f"{source} holds no benchmark results with extra_info; was it run with --benchmark-disable?")
    required = ("variant", "mode", "device")
    if broken := next((r for r in rows if any(k not in r for k in required)), None):
        raise ReportError(
            f"{source}: a result lacks {', '.join(k for k in required if k not in broken)}; "
            "it was not written by this project's benchmarks"
        )
    for row, where in zip(rows, places, strict=True):
        if (problem := record_problem(row)) is not None:
            raise damaged(f"{where} ({row['variant']}, {row['mode']}, {row['device']})", problem)
    return rows, data.get("datetime", "")


def seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def with_interval(value: float, low: float | None, high: float | None, fmt: str = ",.0f") -> str:
    if low is None or high is None:
        return f"{value:{fmt}}"
    return f"{value:{fmt}} [{low:{fmt}}-{high:{fmt}}]"


def ratio_text(summary: dict) -> str:
    if summary.get("ratio") is None:
        return "n/a"
    text = with_interval(summary["ratio"], summary.get("low"), summary.get("high"), ".2f").replace(" [", "x [")
    return text if "[" in text else f"{text}x" + (" (unpaired)" if summary.get("unpaired") else "")


def throughput_key(row: dict) -> tuple:
    return row["mode"], row["device"], row["batch_size"], row["precision"]


def speed_ratio(fast: dict, slow: dict) -> dict:
    """How many times faster `fast` ran than `slow`: paired from their rounds when both carry them, else
    (results recorded before the rounds were paired) the ratio of the two medians, marked unpaired."""
    if fast.get("round_seconds") and slow.get("round_seconds"):
        return stats.paired_speed_ratio(fast["round_seconds"], slow["round_seconds"])
    return {
        "ratio": fast["images_per_s"] / slow["images_per_s"],
        "low": None,
        "high": None,
        "pairs": 0,
        "unpaired": True,
    }


def load_mark(row: dict) -> str:
    if row.get("loaded"):
        return f"**loaded** ({row['other_processes_cores']:.2f} cores used by others)"
    if "other_processes_cores" in row:
        return f"{row['other_processes_cores']:.2f}"
    return "not recorded"


def measured(rows: Iterable[dict], mode_filter) -> list[dict]:
    return [r for r in rows if mode_filter(r["mode"]) and ("images_per_s" in r or "not_run" in r)]


def throughput_table(rows: list[dict]) -> str:
    runs = measured(rows, lambda m: m not in OWN_TABLE)
    if not runs:
        return ""
    base = {throughput_key(r): r for r in runs if r["variant"] == BASELINE and "images_per_s" in r}
    peaks = {r["device"]: r for r in rows if r["mode"] == "peak" and "gflops" in r}
    lines = [
        "| mode | variant | device | batch | precision | images/s, median [95% interval] | rounds | "
        "vs PyTorch eager, paired [95% interval] | GFLOP/s (of matmul peak) | compile s | other processes, cores |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(runs, key=lambda r: (*throughput_key(r), -r.get("images_per_s", -1))):
        head = f"| {r['mode']} | {r['variant']} | {r['device']} | {r['batch_size']} | {r['precision']} |"
        if "not_run" in r:
            lines.append(f"{head} not run: {r['not_run']} | | | | | |")
            continue
        b = base.get(throughput_key(r))
        ratio = ratio_text(speed_ratio(r, b)) if b else "n/a"
        rate = with_interval(r["images_per_s"], r.get("images_per_s_low"), r.get("images_per_s_high"))
        lines.append(
            f"{head} {rate} | {r.get('rounds', 'n/a')} | {ratio} | {gflops(r, peaks.get(r['device']))} | "
            f"{seconds(r['compile_seconds'])} | {load_mark(r)} |"
        )
    if peaks:
        lines.append("")
        lines.append(
            "Matmul peak (one float32 torch.mm, measured in this run): "
            + "; ".join(
                f"{d} {with_interval(p['gflops'], p.get('gflops_low'), p.get('gflops_high'))} GFLOP/s"
                for d, p in sorted(peaks.items())
            )
            + "."
        )
    return "\n".join(lines + settings_lines(runs))


def settings_lines(runs: list[dict]) -> list[str]:
    """The settings both frameworks ran under, stated beside the table (one line per device)."""
    lines = []
    for device in sorted({r["device"] for r in runs}):
        r = next(x for x in runs if x["device"] == device)
        threads = f"{r['threads']} threads for both frameworks" if "threads" in r else "threads not recorded"
        lines.append(
            f"Settings, {device}: {threads}; {r.get('settings', 'autotuning and determinism not recorded')}; "
            "every variant warmed up alike, then timed in interleaved rounds."
        )
    return [""] + lines if lines else []


def goal_lines(rows: list[dict]) -> str:
    """Each goal, in every comparison where both variants ran, judged on the paired ratio's interval."""
    runs = [r for r in rows if r["mode"] not in OWN_TABLE and "images_per_s" in r]
    lines = []
    for device, mode, fast, slow, goal in GOALS:
        for key in sorted({throughput_key(r) for r in runs if r["device"] == device and r["mode"] == mode}):
            pair = {r["variant"]: r for r in runs if throughput_key(r) == key and r["variant"] in (fast, slow)}
            if len(pair) < 2:
                continue
            summary = speed_ratio(pair[fast], pair[slow])
            lines.append(
                f"- {mode} {device} batch {key[2]} {key[3]}: {fast} >= {goal:g}x {slow}: {ratio_text(summary)}, "
                f"{stats.verdict(summary, goal)}"
            )
    return (
        "Goals (met only when the paired ratio's whole 95% interval clears the goal):\n" + "\n".join(lines)
        if lines
        else ""
    )


def gflops(row: dict, peak: dict | None) -> str:
    """Achieved GFLOP/s of a throughput row, and its fraction of the device's measured float32 matmul rate
    (float32 rows only: TF32 and bf16 have other peaks)."""
    rate = row["images_per_s"] * FLOP_PER_IMAGE[row["mode"]] / 1e9
    share = f" ({100 * rate / peak['gflops']:.0f}%)" if peak and row["precision"] == "float32" else ""
    return f"{rate:,.1f}{share}"


def latency_table(rows: list[dict]) -> str:
    """One image per call, as `predict` in a loop: median and 99th percentile, lower is better."""
    runs = [r for r in rows if r["mode"] == "latency" and "latency_p50_ms" in r]
    if not runs:
        return ""
    base = {r["device"]: r for r in runs if r["variant"] == BASELINE}
    lines = [
        "| latency, 1 image per call | device | p50 ms [95% interval] | p99 ms | calls | "
        "speed vs PyTorch eager, paired blocks | compile s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["latency_p50_ms"])):
        b = base.get(r["device"])
        ratio = ratio_text(speed_ratio(r, b)) if b else "n/a"
        p50 = with_interval(r["latency_p50_ms"], r.get("latency_p50_low_ms"), r.get("latency_p50_high_ms"), ".3f")
        lines.append(
            f"| {r['variant']} | {r['device']} | {p50} | {r['latency_p99_ms']:.3f} | {r.get('calls', 'n/a')} | "
            f"{ratio} | {seconds(r['compile_seconds'])} |"
        )
    return "\n".join(lines)


def overhead_table(rows: list[dict]) -> str:
    """The host's cost of one compiled call per way of writing a JAX step (`test_call_overhead.py`), lower is
    better; the ratio is Linen `jax.jit`'s call time over the variant's, paired block by block."""
    runs = [r for r in rows if r["mode"] == "overhead" and "overhead_us" in r]
    if not runs:
        return ""
    base = {r["device"]: r for r in runs if r["variant"] == "jax_jit"}
    lines = [
        "| call overhead, one empty-ish step per call | device | microseconds per call [95% interval] | calls | "
        "speed vs Linen `jax.jit`, paired blocks | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["overhead_us"])):
        b = base.get(r["device"])
        ratio = ratio_text(speed_ratio(r, b)) if b else "n/a"
        us = with_interval(r["overhead_us"], r.get("overhead_low_us"), r.get("overhead_high_us"), ",.0f")
        lines.append(
            f"| {r['variant']} | {r['device']} | {us} | {r.get('calls', 'n/a')} | {ratio} | "
            f"{seconds(r['compile_seconds'])} |"
        )
    return "\n".join(lines)


def spread(summary: dict, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    """mean (min-max) of a mean_and_spread summary."""
    if not summary or summary.get("mean") is None:
        return "none"
    mean, low, high = (scale * summary[k] for k in ("mean", "min", "max"))
    return f"{mean:{fmt}}{unit}" if summary["n"] == 1 else f"{mean:{fmt}}{unit} ({low:{fmt}}-{high:{fmt}})"


def mean_with_interval(summary: dict | None, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    """mean [95% interval] of a mean_interval summary (the mean alone for one value; "none" for none)."""
    if not summary or summary.get("mean") is None:
        return "none"
    mean = f"{scale * summary['mean']:{fmt}}{unit}"
    if summary.get("low") is None:
        return mean
    return f"{mean} [{scale * summary['low']:{fmt}}-{scale * summary['high']:{fmt}}]"


def target_text(row: dict) -> str:
    """The target epoch of an accuracy row, or that the mean's interval never cleared 99% in its epochs."""
    if row["target_epoch"] is None:
        epochs = len(row["epoch_accuracy"])
        return f"not within {epochs} epoch{'' if epochs == 1 else 's'}"
    return str(row["target_epoch"])


def epoch_accuracy_table(rows: list[dict]) -> str:
    """Time to accuracy as speed-run records count it: the mean test accuracy after each epoch over every seed,
    the first epoch whose interval clears 99%, and the time to it from the command's start and in training
    alone (rows recorded before every seed trained every epoch have no such figures, and no row here)."""
    runs = [r for r in rows if r["mode"] == "accuracy" and "epoch_accuracy" in r]
    if not runs:
        return ""
    epochs = max(len(r["epoch_accuracy"]) for r in runs)
    lines = [
        "| trainer | device | precision | settings | seeds | "
        + " | ".join(f"epoch {e}: mean % [95% interval]" for e in range(1, epochs + 1))
        + " | first epoch whose interval clears 99% | to it from the command's start, s | training alone, s |",
        "|---|---|---|---|---:|" + "---:|" * (epochs + 3),
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["precision"], r["setting"] != "shipped", r["variant"])):
        cells = [mean_with_interval(m, ".2f", 100) for m in r["epoch_accuracy"]]
        cells += [""] * (epochs - len(cells))
        lines.append(
            f"| {r['variant']} | {r['device']} | {r['precision']} | {r['setting']} | {r['seeds_run']} | "
            + " | ".join(cells)
            + f" | {target_text(r)} | {mean_with_interval(r['wall_to_target_s'], '.1f')} | "
            f"{mean_with_interval(r['train_to_target_s'], '.1f')} |"
        )
    lines += [
        "",
        "Every seed trains every epoch and counts. From the command's start: until the target epoch's line is "
        "printed (imports, data, compilation, training, and each epoch's evaluation and checkpoint); training "
        "alone: the epochs' training seconds up to it. Intervals: 95% Student-t over the seeds.",
    ]
    return "\n".join(lines)


def accuracy_table(rows: list[dict]) -> str:
    runs = [r for r in rows if r["mode"] == "accuracy"]
    if not runs:
        return ""
    if any("seeds_run" not in r for r in runs):
        return legacy_accuracy_table(runs)
    lines = [
        "| trainer | device | precision | settings | seeds reaching 99% | "
        "time to 99%, s, of those seeds: mean (min-max) | first epoch at 99% | "
        "final accuracy: mean ± sd (full runs) | s/epoch | compile s | original project |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["precision"], r["setting"] != "shipped", r["variant"])):
        final = r["final_accuracy"]
        final_text = (
            "none"
            if final["mean"] is None
            else (
                f"{100 * final['mean']:.2f}%"
                + (f" ± {100 * final['std']:.2f}" if final["std"] is not None else "")
                + f" (n={final['n']})"
            )
        )
        planned = f" of {r['seeds_planned']} planned" if r["seeds_run"] < r["seeds_planned"] else ""
        lines.append(
            f"| {r['variant']} | {r['device']} | {r['precision']} | {r['setting']} | "
            f"{r['reached_99']}/{r['seeds_run']}{planned} | "
            f"{spread(r['time_to_99'], '.2f')} | {spread(r['first_epoch_at_99'], '.1f')} | {final_text} | "
            f"{spread(r['seconds_per_epoch'], '.3f')} | {spread(r['compile_seconds'], '.2f')} | "
            f"{100 * r['original_accuracy']:.2f}% |"
        )
    lines += [
        "",
        "Settings: shipped = each trainer's defaults in a fresh process (deterministic: PyTorch's deterministic "
        "algorithms, XLA's deterministic GPU ops); fastest = `--nondeterministic` (cuDNN and XLA autotuning, atomics "
        "allowed). "
        + (
            "Every seed trains every epoch (the final accuracy is over all of them). "
            if all("epoch_accuracy" in r for r in runs)
            else "Seed 0 trains every epoch (the final accuracy); the other seeds stop at their first epoch at >= 99%. "
        )
        + "Time to 99% counts the training seconds of the epochs up to it, not start-up, compilation or evaluation.",
    ]
    return "\n".join(lines)


def legacy_accuracy_table(runs: list[dict]) -> str:
    """Results recorded before the accuracy benchmark ran several seeds: one seed each, said so."""
    lines = [
        "| trainer (one seed: recorded before the seeds were repeated) | device | precision | epochs | test accuracy | "
        "time to 99% (s) | s/epoch | compile s | original project |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["precision"], r["variant"])):
        t99 = f"{r['time_to_99_s']:.2f}" if r.get("time_to_99_s") is not None else "not reached"
        lines.append(
            f"| {r['variant']} | {r['device']} | {r['precision']} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% | "
            f"{t99} | {r['train_seconds'] / r['epochs']:.3f} | {seconds(r['compile_seconds'])} | "
            f"{100 * r['original_accuracy']:.2f}% |"
        )
    return "\n".join(lines)


#: The README's headline columns, per device: each trainer as a user runs it, and the suite's variant of its step.
HEADLINE = {
    "cpu": [
        ("PyTorch eager", "torch_eager", BASELINE),
        ("PyTorch `--mode compile`", "torch_compile", "torch_compile"),
        ("PyTorch `--mode compile-step`", "torch_compile_step", "torch_compile_step"),
        ("JAX", "jax", JAX_TRAINER_PATH["cpu"]),
    ],
    "cuda": [
        ("PyTorch eager", "torch_eager", BASELINE),
        ("PyTorch `--mode cuda-graphs`", "torch_cudagraph", "torch_cudagraph"),
        ("JAX", "jax", JAX_TRAINER_PATH["cuda"]),
    ],
}


def headline_table(rows: list[dict], device: str) -> str:
    """The README's headline: time to 99% over seeds as shipped, the final accuracy, and the training step's
    paired speed at batch 128 float32, one column per trainer; empty without the accuracy runs."""
    accuracy = {
        r["variant"]: r
        for r in rows
        if r["mode"] == "accuracy"
        and r["device"] == device
        and r.get("setting") == "shipped"
        and r["precision"] == "float32"
        and "seeds_run" in r
    }
    steps = {
        r["variant"]: r
        for r in rows
        if r["mode"] == "train"
        and r["device"] == device
        and r["batch_size"] == 128
        and r["precision"] == "float32"
        and "images_per_s" in r
    }
    cold = {
        r["variant"]: r for r in rows if r["mode"] == "cold_start" and r["device"] == device and r.get("cold_compile_s")
    }
    columns = [c for c in HEADLINE[device] if c[1] in accuracy]
    if not columns:
        return ""

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(*c) for c in columns) + " |"

    def final(name: str, trainer: str, step: str) -> str:
        f = accuracy[trainer]["final_accuracy"]
        return (
            "none"
            if f["mean"] is None
            else f"{100 * f['mean']:.2f}%" + (f" ± {100 * f['std']:.2f}" if f["std"] is not None else "")
        )

    def speed(name: str, trainer: str, step: str) -> str:
        if step not in steps:
            return "not run"
        r = steps[step]
        rate = with_interval(r["images_per_s"], r.get("images_per_s_low"), r.get("images_per_s_high"))
        ratio = ratio_text(speed_ratio(r, steps[BASELINE])) if BASELINE in steps else "n/a"
        return f"{rate} ({ratio})"

    def compiling(name: str, trainer: str, step: str) -> str:
        variant = "jax_jit" if trainer == "jax" else trainer
        if variant not in cold:
            return "none (eager)" if trainer == BASELINE else "not measured"
        c = cold[variant]
        cold_s, warm_s = stats.median_interval(c["cold_compile_s"])[0], stats.median_interval(c["warm_compile_s"])[0]
        return f"{cold_s:.2f} s cold, {warm_s:.2f} s warm"

    seeds = sorted({r["seeds_run"] for r in accuracy.values()})
    each = f"{'/'.join(map(str, seeds))} seed{'' if seeds == [1] else 's'} each"
    if all("epoch_accuracy" in accuracy[c[1]] for c in columns):  # every seed trained every epoch: time to accuracy
        to_accuracy = [
            row(
                "first epoch whose mean test accuracy over the seeds clears 99% (95% interval's lower end)",
                lambda n, t, s: target_text(accuracy[t]),
            ),
            row(
                "its mean test accuracy, % [95% interval]",
                lambda n, t, s: (
                    "n/a"
                    if accuracy[t]["target_epoch"] is None
                    else mean_with_interval(accuracy[t]["epoch_accuracy"][accuracy[t]["target_epoch"] - 1], ".2f", 100)
                ),
            ),
            row(
                "time to it from the command's start, s: mean [95% interval]",
                lambda n, t, s: (
                    mean_with_interval(accuracy[t]["wall_to_target_s"], ".1f") if accuracy[t]["target_epoch"] else "n/a"
                ),
            ),
            row(
                "training time alone to it, s: mean [95% interval]",
                lambda n, t, s: (
                    mean_with_interval(accuracy[t]["train_to_target_s"], ".1f")
                    if accuracy[t]["target_epoch"]
                    else "n/a"
                ),
            ),
            row("test accuracy after 10 epochs: mean ± sd over every seed", final),
        ]
    else:  # results from before every seed trained every epoch: what they measured, said as such
        to_accuracy = [
            row(
                "time to 99%, s, over the seeds that reach it: mean (min-max)",
                lambda n, t, s: spread(accuracy[t]["time_to_99"], ".1f"),
            ),
            row(
                "first epoch at >= 99%: mean (min-max)",
                lambda n, t, s: spread(accuracy[t]["first_epoch_at_99"], ".1f"),
            ),
            row("test accuracy after 10 epochs (seed 0)", final),
        ]
    lines = [
        f"| {each}, {device}, float32, as shipped | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
        row(
            "seeds reaching 99% within 10 epochs",
            lambda n, t, s: f"{accuracy[t]['reached_99']}/{accuracy[t]['seeds_run']}",
        ),
        *to_accuracy,
        row("seconds per epoch: mean (min-max)", lambda n, t, s: spread(accuracy[t]["seconds_per_epoch"], ".1f")),
        row(
            "the trainer's one-off compilation in these runs, s: mean (min-max)",
            lambda n, t, s: (
                "none (eager)"
                if accuracy[t]["compile_seconds"]["n"] == 0
                else spread(accuracy[t]["compile_seconds"], ".1f")
            ),
        ),
    ]
    # A run of the accuracy benchmark alone (`-k accuracy`) measured no step and no cold start: no row says "not run".
    if steps:
        lines.insert(-1, row("training step, images/s at batch 128 [95% interval] (paired speed vs eager)", speed))
    if steps or cold:
        lines.append(
            row(
                "compiling one training step (`torch.compile`, `jax.jit`), fresh processes: empty / warm caches",
                compiling,
            )
        )
    return "\n".join(lines)


#: The training step's two headline comparisons (float32), per device, as (label, variant) columns: each framework
#: as a user writes it first (the model through torch.compile; one step through jax.jit), and each at its fastest
#: (PyTorch's fastest trainer mode, the JAX trainer as shipped). The last column is JAX's, judged against the middle.
AS_WRITTEN = [
    ("PyTorch eager", BASELINE),
    ("PyTorch, the model through `torch.compile`", "torch_compile"),
    ("JAX, one step through `jax.jit`", "jax_jit"),
]
AT_BEST = {
    "cpu": [
        ("PyTorch eager", BASELINE),
        ("PyTorch `--mode compile-step`", TORCH_BEST["cpu"]),
        ("JAX as shipped", JAX_TRAINER_PATH["cpu"]),
    ],
    "cuda": [
        ("PyTorch eager", BASELINE),
        ("PyTorch `--mode cuda-graphs`", TORCH_BEST["cuda"]),
        ("JAX as shipped", JAX_TRAINER_PATH["cuda"]),
    ],
}


def speed_headlines(rows: list[dict], device: str) -> list[str]:
    """The README's two tables of the training step on `device`, float32: as written and each at its best, with
    images/s, the paired speed against eager and JAX's paired speed against the PyTorch column beside it, at
    every batch size measured; none without training-step rows."""
    steps = {
        (r["variant"], r["batch_size"]): r
        for r in rows
        if r["mode"] == "train" and r["device"] == device and r["precision"] == "float32" and "images_per_s" in r
    }
    batches = sorted({b for _, b in steps})
    tables = []
    for title, columns in (("as written", AS_WRITTEN), ("each at its best", AT_BEST[device])):
        if not any((variant, b) in steps for _, variant in columns for b in batches):
            continue
        lines = [
            f"| training step, {device}, float32, {title} | " + " | ".join(label for label, _ in columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        (_, torch_variant), (_, jax_variant) = columns[1], columns[2]
        for b in batches:

            def rate(variant: str, b: int = b) -> str:
                r = steps.get((variant, b))
                return (
                    "not run"
                    if r is None
                    else with_interval(r["images_per_s"], r.get("images_per_s_low"), r.get("images_per_s_high"))
                )

            def against(variant: str, other: str, b: int = b) -> str:
                fast, slow = steps.get((variant, b)), steps.get((other, b))
                return "n/a" if fast is None or slow is None else ratio_text(speed_ratio(fast, slow))

            lines += [
                f"| images/s at batch {b} [95% interval] | " + " | ".join(rate(v) for _, v in columns) + " |",
                f"| paired speed vs PyTorch eager, batch {b} | "
                + " | ".join(against(v, BASELINE) for _, v in columns)
                + " |",
                f"| JAX's paired speed vs the PyTorch column beside it, batch {b} | | | "
                f"{against(jax_variant, torch_variant)} |",
            ]
        tables.append("\n".join(lines))
    return tables


def headline_tables(rows: list[dict]) -> list[str]:
    """Every device's headline tables: time to accuracy (with accuracy runs), then the training step's two."""
    devices = sorted({r["device"] for r in rows} & set(HEADLINE))
    return [t for device in devices for t in (headline_table(rows, device), *speed_headlines(rows, device)) if t]


def cold_start_table(rows: list[dict]) -> str:
    runs = [r for r in rows if r["mode"] == "cold_start" and r.get("cold_compile_s")]
    if not runs:
        return ""

    def steps(value: int | None) -> str:
        return "never" if value is None else f"{value:,}"

    lines = [
        "| compiled path, batch 128 | device | compile s, empty caches: median (min-max) | from a warm cache | "
        "step ms, compiled | step ms, own eager | break-even steps vs own eager: cold / warm | "
        "vs PyTorch eager: cold / warm |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["variant"])):
        cold, warm = stats.mean_and_spread(r["cold_compile_s"]), stats.mean_and_spread(r["warm_compile_s"])
        cold_median, _, _ = stats.median_interval(r["cold_compile_s"])
        warm_median, _, _ = stats.median_interval(r["warm_compile_s"])
        vs_torch = (
            f"{steps(r.get('break_even_cold_vs_torch_eager'))} / {steps(r.get('break_even_warm_vs_torch_eager'))}"
            if r["framework"] == "jax"
            else "(same)"
        )
        lines.append(
            f"| {r['variant']} | {r['device']} | {cold_median:.2f} ({cold['min']:.2f}-{cold['max']:.2f}) | "
            f"{warm_median:.2f} ({warm['min']:.2f}-{warm['max']:.2f}) | {1000 * r['compiled_step_s']:.2f} | "
            f"{1000 * r['eager_step_s']:.2f} ({r['eager_variant']}) | {steps(r['break_even_cold_steps'])} / "
            f"{steps(r['break_even_warm_steps'])} | {vs_torch} |"
        )
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    runs = [r for r in rows if r["mode"] == "memory"]
    if not runs:
        return ""
    lines = [
        "| peak device memory, each variant in its own process | mode | device | batch | MiB | measured by |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["measured_mode"], r["batch_size"], r["variant"])):
        value = r.get("peak_memory_bytes")
        shown = (
            f"{value / 2**20:,.0f}"
            if value is not None
            else f"not measured: {r.get('memory_note', 'no reason recorded')}"
        )
        lines.append(
            f"| {r['variant']} | {r['measured_mode']} | {r['device']} | {r['batch_size']} | {shown} | "
            f"{r.get('memory_measure', '')} |"
        )
    return "\n".join(lines)


def scaling_table(rows: list[dict]) -> str:
    """Data-parallel rows: images/s on N devices, and the efficiency against the same framework's 1-device run."""
    runs = [r for r in rows if r["mode"] == "scaling"]
    if not runs:
        return ""
    one = {(r["device"], r["framework"]): r["images_per_s"] for r in runs if r["devices"] == 1}
    lines = [
        "| data parallel, global batch 128 | device | processes | devices | threads per device | images/s | speed-up | "
        "efficiency |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["framework"] != "torch", r["devices"], r["variant"])):
        base = one.get((r["device"], r["framework"]))
        speedup = f"{r['images_per_s'] / base:.2f}x" if base else "n/a"
        efficiency = f"{100 * r['images_per_s'] / (base * r['devices']):.0f}%" if base else "n/a"
        threads = r.get("threads_per_device") or "all"
        lines.append(
            f"| {r['variant']} | {r['device']} | {r['processes']} | {r['devices']} | {threads} | "
            f"{r['images_per_s']:,.0f} | {speedup} | {efficiency} |"
        )
    lines.append("")
    lines.append("Scaling rows are one run each (the median of its epochs after the first), without an interval.")
    return "\n".join(lines)


def known_commit(commit: str) -> bool:
    try:
        done = subprocess.run(
            ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO, capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def provenance_line(rows: list[dict], verify: bool = True) -> str:
    """Where the figures come from: the commit and whether the tree was clean, or why that is unknown.
    `verify=False` (the generated blocks of the README) does not ask git whether it knows the commit, so the
    text is the same in a copy without git metadata."""
    commits = sorted({(r.get("commit"), r.get("dirty"), r.get("commit_source")) for r in rows}, key=str)
    parts = []
    for commit, dirty, source in commits:
        if commit is None:
            parts.append(
                "**provenance unknown** (no commit recorded: results from before the benchmarks recorded it, "
                "or a copy without git metadata)"
            )
        elif dirty:
            parts.append(f"commit {commit[:12]}, **DIRTY tree** (the code measured differs from the commit)")
        elif source and source != "git":
            parts.append(f"commit {commit[:12]} {source}")
        elif verify and not known_commit(commit):
            parts.append(f"commit {commit[:12]}, **foreign**: not in this repository")
        else:
            parts.append(f"commit {commit[:12]}, clean tree")
    return "Provenance: " + "; ".join(parts) + "."


def environment_line(rows: list[dict], when: str, verify: bool = True) -> str:
    r = rows[0]
    devices = sorted({f"{x['device']}: {x['device_name']}" for x in rows if "device_name" in x})
    cpus = sorted({x["cpu_name"] for x in rows if x.get("cpu_name") and x["device"] == "cuda"})
    line = (
        f"Measured {when[:10]} on {'; '.join(devices)}{' (host CPU: ' + '; '.join(cpus) + ')' if cpus else ''}. "
        f"torch {r.get('torch')}, jax {r.get('jax')} (jaxlib {r.get('jaxlib')}), flax {r.get('flax')}, "
        f"optax {r.get('optax')}, "
        f"Python {r.get('python')}. {provenance_line(rows, verify)}"
    )
    if any(x.get("dry_run") for x in rows):
        line = "**DRY RUN** (`--bench-dry-run`: two tiny rounds per variant; the figures mean nothing). " + line
    if loaded := sorted({x["variant"] for x in rows if x.get("loaded")}):
        line += f" **Measured under load** (other processes took over a quarter of a core): {', '.join(loaded)}."
    return line


#: Colour families: PyTorch's variants in oranges and reds, JAX's in blues and greens.
PALETTE = {
    "torch": ["#b2182b", "#e6550d", "#fd8d3c", "#fdae6b"],
    "jax": ["#08519c", "#3182bd", "#31a354", "#74c476", "#6baed6"],
}


def variant_colours(variants: list[str]) -> dict[str, str]:
    colours, used = {}, {"torch": 0, "jax": 0}
    for v in variants:
        family = "torch" if v.startswith("torch") else "jax"
        colours[v] = PALETTE[family][used[family] % len(PALETTE[family])]
        used[family] += 1
    return colours


def bar_chart(rows: list[dict], path: Path, title: str) -> None:
    runs = measured(rows, lambda m: m not in OWN_TABLE)
    rated = [r for r in runs if "images_per_s" in r]
    if not rated:  # only accuracy or latency results: no throughput to chart
        return
    groups = sorted({throughput_key(r) for r in runs})
    variants = sorted({r["variant"] for r in runs}, key=lambda v: (not v.startswith("torch"), v))
    colours = variant_colours(variants)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups)), 4.8))
    width = 0.8 / len(variants)
    labelled: set[str] = set()
    not_run: list[tuple[float, str]] = []
    for i, variant in enumerate(variants):
        for j, g in enumerate(groups):
            r = next((r for r in runs if throughput_key(r) == g and r["variant"] == variant), None)
            if r is None:
                continue
            if "not_run" in r:  # marked, not left as a gap
                not_run.append((j + i * width, variant))
                continue
            low, high = r.get("images_per_s_low"), r.get("images_per_s_high")
            err = (
                [[r["images_per_s"] - low], [high - r["images_per_s"]]]
                if low is not None and high is not None
                else None
            )
            ax.bar(
                j + i * width,
                r["images_per_s"],
                width,
                color=colours[variant],
                yerr=err,
                capsize=2,
                ecolor="black",
                hatch="//" if r.get("loaded") else None,
                label=None if variant in labelled else variant,
            )
            labelled.add(variant)
    ax.set_yscale("log")
    bottom = min(r["images_per_s"] for r in rated) / 3
    ax.set_ylim(bottom=bottom)
    for x, variant in not_run:
        ax.text(x, bottom * 1.2, "not run", rotation=90, fontsize=6, ha="center", va="bottom", color=colours[variant])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\n{d} b{b}\n{p}" for m, d, b, p in groups], fontsize=8)
    ax.set_ylabel("images / s (median, 95% interval)")
    ax.set_title(title + ("\nhatched: measured under load" if any(r.get("loaded") for r in rated) else ""))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build(documents: list[dict], source: str, verify: bool = True) -> tuple[dict, list[dict], str]:
    data = merge(documents)
    rows, when = rows_of(data, source)
    devices = sorted({r["device"] for r in rows} & set(HEADLINE))
    headlines = [
        table for device in devices for table in (headline_table(rows, device), *speed_headlines(rows, device))
    ]
    sections = [
        environment_line(rows, when, verify),
        *headlines,
        throughput_table(rows),
        goal_lines(rows),
        latency_table(rows),
        overhead_table(rows),
        accuracy_table(rows),
        epoch_accuracy_table(rows),
        cold_start_table(rows),
        memory_table(rows),
        scaling_table(rows),
    ]
    return data, rows, "\n\n".join(s for s in sections if s) + "\n"


#: The files whose generated blocks `--readme` rewrites, relative to the repository.
GENERATED_FILES = ("README.md", "docs/benchmarks.md")
RESULTS_DIR = Path("benchmarks") / "results"
#: A generated block: its kind (results: the headline table and its settings; report: the whole report), the
#: stem of the committed JSON it comes from, and what stands between its markers.
BLOCK = re.compile(
    r"(?P<begin><!-- (?P<kind>results|report):(?P<name>[\w.-]+) begin -->\n)(?P<body>.*?)"
    r"(?P<end><!-- (?P=kind):(?P=name) end -->)",
    re.S,
)


def headline_settings(rows: list[dict], when: str) -> str:
    """What the README states beside a headline table: machine, date, versions, commit, threads, precision,
    determinism and autotuning, and the command that measured it."""
    r = next((x for x in rows if x["mode"] == "train" and "threads" in x), rows[0])
    threads = f"{r['threads']} threads for each framework" if "threads" in r else "threads not recorded"
    accuracy = [x for x in rows if x["mode"] == "accuracy"]
    seeds = (
        "every seed for all 10 epochs, each counted"
        if accuracy and all("epoch_accuracy" in x for x in accuracy)
        else "seed 0 for all 10 epochs and the other seeds until their first epoch at >= 99%"
    )
    step = (
        f" The training-step rows: {threads}, float32, {r.get('settings', 'autotuning and determinism not recorded')}; "
        "paired, interleaved rounds with a 95% interval on every figure and ratio."
        if any(x["mode"] == "train" for x in rows)
        else f" {threads[0].upper()}{threads[1:]}."
    )
    accuracy_rows = (
        " The accuracy rows: each trainer as a user runs it, in its own process, with its shipped settings "
        f"(deterministic, float32), {seeds}."
        if accuracy
        else ""
    )
    suite = "Measured by the benchmark suite (`benchmarks/`)."
    return f"{environment_line(rows, when, verify=False)} {suite}{accuracy_rows}{step}"


def generated_block(kind: str, name: str, root: Path) -> str:
    """The Markdown that belongs between a block's markers, from root/benchmarks/results/NAME.json."""
    path = root / RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        raise ReportError(f"a block names {kind}:{name}, but there is no {RESULTS_DIR / (name + '.json')}")
    data, rows, markdown = build([read_json(path)], str(RESULTS_DIR / path.name), verify=False)
    if kind == "report":
        return markdown
    tables = headline_tables(rows)
    if not any(tables):
        raise ReportError(
            f"{RESULTS_DIR / path.name} holds no accuracy runs and no training steps, so it has no headline table; "
            f"use a report:{name} block for it"
        )
    return "\n\n".join([*filter(None, tables), headline_settings(rows, data.get("datetime", ""))]) + "\n"


def refresh(text: str, root: Path) -> tuple[str, list[str]]:
    """`text` with every generated block rewritten from the committed results, and the blocks that changed."""
    stale: list[str] = []

    def redo(m: re.Match) -> str:
        body = generated_block(m["kind"], m["name"], root)
        if body != m["body"]:
            stale.append(f"{m['kind']}:{m['name']}")
        return m["begin"] + body + m["end"]

    return BLOCK.sub(redo, text), stale


def refresh_files(root: Path, check: bool) -> list[str]:
    """Rewrite (or, with check, only compare) the generated blocks of GENERATED_FILES; returns 'FILE: block' for
    each block that differed."""
    stale = []
    for name in GENERATED_FILES:
        path = root / name
        text = path.read_text()
        new, changed = refresh(text, root)
        stale += [f"{name}: {block}" for block in changed]
        if changed and not check:
            path.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description="pytest-benchmark JSON -> Markdown tables and a PNG bar chart"
    )
    parser.add_argument("results", type=Path, nargs="*", help="the file(s) from --benchmark-json")
    parser.add_argument(
        "--readme",
        action="store_true",
        help=f"rewrite the generated tables of {' and '.join(GENERATED_FILES)} from the committed "
        "benchmarks/results/*.json, in place",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="with --readme: write nothing; exit 1 naming each generated table that differs from "
        "what the committed results give",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="where the .md and .png go (default: beside the first JSON)"
    )
    parser.add_argument(
        "--name", default=None, help="file name stem of what is written (default: the first JSON's stem)"
    )
    parser.add_argument("--title", default="PyTorch vs JAX, MNIST CNN: throughput (higher is better)")
    args = parser.parse_args(argv)
    if args.readme:
        if args.results:
            parser.error("--readme reads the committed benchmarks/results/*.json; give it no result files")
        try:
            stale = refresh_files(REPO, args.check)
        except (ReportError, OSError) as err:
            sys.exit(f"error: {err}")
        if args.check and stale:
            print("\n".join(f"stale: {s}" for s in stale), file=sys.stderr)
            sys.exit(
                f"error: {len(stale)} generated table(s) differ from the committed results; "
                "run `python -m benchmarks.report --readme`"
            )
        print("\n".join(f"rewrote: {s}" for s in stale) or "every generated table is up to date")
        return
    if args.check:
        parser.error("--check goes with --readme")
    if not args.results:
        parser.error("give the file(s) from --benchmark-json, or --readme")
    out_dir = args.out_dir or args.results[0].parent
    name = args.name or args.results[0].stem
    outputs = [out_dir / f"{name}.json"] * (len(args.results) > 1) + [out_dir / f"{name}{s}" for s in (".md", ".png")]
    if over := written_over(outputs, args.results):  # before anything is read or written: the results stay whole
        sys.exit(
            f"error: {over[1]} is one of the results read, and the report would write {over[0]} over it; "
            "pass --name or --out-dir so that the report's files are new ones"
        )
    try:
        data, rows, markdown = build([read_json(path) for path in args.results], " + ".join(map(str, args.results)))
    except ReportError as err:
        sys.exit(f"error: {err}")
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        sys.exit(
            f"error: {' + '.join(map(str, args.results))} has a result this report cannot read ({type(err).__name__}: "
            f"{err}); expected files written by this project's `pytest benchmarks --benchmark-only --benchmark-json`"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(args.results) > 1:
        (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    bar_chart(rows, out_dir / f"{name}.png", args.title)
    print(markdown)


if __name__ == "__main__":
    main()

"""Turn pytest-benchmark JSON into a Markdown table and a PNG bar chart.

Usage: python -m benchmarks.report RESULTS.json [MORE.json ...] [--out-dir DIR] [--name NAME] [--title TEXT]
Writes DIR/NAME.md and DIR/NAME.png (NAME: the first JSON's stem) and prints the Markdown; given
several JSON files (the stages of `benchmarks/gpu_run.sh`), it also writes their rows merged into
DIR/NAME.json. Ratios compare each variant with PyTorch eager on the same device, mode, batch size
and precision.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINE = "torch_eager"

#: Floating-point operations per image of the model's training step (forward, backward) and of its
#: forward pass, by PyTorch's FlopCounterMode at batch 128 (3.509 and 1.189 GFLOP per batch): the same
#: work for every variant, whatever it skips (XLA's own count of its step is 3.33 GFLOP: no input
#: gradient for conv1). Multiplied by images/s they give the achieved GFLOP/s.
FLOP_PER_IMAGE = {"train": 27.41e6, "eval": 9.288e6}

#: Modes with their own table: not images per second of a batch.
OWN_TABLE = ("accuracy", "latency", "peak", "scaling")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        sys.exit(f"error: cannot read {path} ({err}); expected the file written by `pytest benchmarks --benchmark-only --benchmark-json {path}`")


def merge(documents: list[dict]) -> dict:
    """One pytest-benchmark document holding every benchmark of `documents`, dated by the first."""
    return {**documents[0], "benchmarks": [b for d in documents for b in d.get("benchmarks", [])]}


def rows_of(data: dict, source: str) -> tuple[list[dict], str]:
    rows = [b["extra_info"] for b in data.get("benchmarks", []) if b.get("extra_info", {}).get("variant")]
    if not rows:
        sys.exit(f"error: {source} holds no benchmark results with extra_info; was it run with --benchmark-disable?")
    return rows, data.get("datetime", "")


def seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def mebibytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def throughput_key(row: dict) -> tuple:
    return row["mode"], row["device"], row["batch_size"], row["precision"]



def throughput_table(rows: list[dict]) -> str:
    runs = [r for r in rows if r["mode"] not in OWN_TABLE and "images_per_s" in r]
    if not runs:
        return ""
    baselines = {throughput_key(r): r["images_per_s"] for r in runs if r["variant"] == BASELINE}
    peaks = {r["device"]: r["gflops"] for r in rows if r["mode"] == "peak" and "gflops" in r}
    lines = [
        "| mode | variant | device | batch | precision | images/s | vs PyTorch eager | GFLOP/s (of matmul peak) | compile s | peak MiB |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (*throughput_key(r), -r["images_per_s"])):
        base = baselines.get(throughput_key(r))
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else "n/a"
        lines.append(
            f"| {r['mode']} | {r['variant']} | {r['device']} | {r['batch_size']} | {r['precision']} | "
            f"{r['images_per_s']:,.0f} | {ratio} | {gflops(r, peaks.get(r['device']))} | {seconds(r['compile_seconds'])} | "
            f"{mebibytes(r.get('peak_memory_bytes'))} |"
        )
    if peaks:
        lines.append("")
        lines.append("Matmul peak (one float32 torch.mm, measured in this run): "
                     + "; ".join(f"{device} {value:,.0f} GFLOP/s" for device, value in sorted(peaks.items())) + ".")
    measures = sorted({f"{r['device']} {r['framework']}: {r['memory_measure']}" for r in runs if r.get("memory_measure")})
    if measures:
        lines.append("")
        lines.append(f"Peak memory: {'; '.join(measures)}.")
    return "\n".join(lines)


def accuracy_table(rows: list[dict]) -> str:
    runs = [r for r in rows if r["mode"] == "accuracy"]
    if not runs:
        return ""
    lines = [
        "| trainer | device | precision | epochs | test accuracy | time to 99% (s) | s/epoch | training s | compile s | original project |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["precision"], r["variant"])):
        t99 = f"{r['time_to_99_s']:.2f}" if r["time_to_99_s"] is not None else "not reached"
        lines.append(
            f"| {r['variant']} | {r['device']} | {r['precision']} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% | "
            f"{t99} | {r['train_seconds'] / r['epochs']:.3f} | {r['train_seconds']:.1f} | {seconds(r['compile_seconds'])} | "
            f"{100 * r['original_accuracy']:.2f}% |"
        )
    return "\n".join(lines)


def gflops(row: dict, peak: float | None) -> str:
    """Achieved GFLOP/s of a throughput row, and its fraction of the device's measured float32 matmul rate
    (float32 rows only: TF32 and bf16 have other peaks)."""
    rate = row["images_per_s"] * FLOP_PER_IMAGE[row["mode"]] / 1e9
    share = f" ({100 * rate / peak:.0f}%)" if peak and row["precision"] == "float32" else ""
    return f"{rate:,.1f}{share}"


def latency_table(rows: list[dict]) -> str:
    """One image per call, as `predict` in a loop: median and 99th percentile, lower is better."""
    runs = [r for r in rows if r["mode"] == "latency" and "latency_p50_ms" in r]
    if not runs:
        return ""
    baselines = {r["device"]: r["latency_p50_ms"] for r in runs if r["variant"] == BASELINE}
    lines = [
        "| latency, 1 image per call | device | p50 ms | p99 ms | speed vs PyTorch eager (p50) | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["latency_p50_ms"])):
        base = baselines.get(r["device"])
        ratio = f"{base / r['latency_p50_ms']:.2f}x" if base else "n/a"
        lines.append(f"| {r['variant']} | {r['device']} | {r['latency_p50_ms']:.3f} | {r['latency_p99_ms']:.3f} | {ratio} | "
                     f"{seconds(r['compile_seconds'])} |")
    return "\n".join(lines)


def scaling_table(rows: list[dict]) -> str:
    """Data-parallel rows: images/s on N devices, and the efficiency against the same framework's 1-device run."""
    runs = [r for r in rows if r["mode"] == "scaling"]
    if not runs:
        return ""
    one = {(r["device"], r["framework"]): r["images_per_s"] for r in runs if r["devices"] == 1}
    lines = [
        "| data parallel, global batch 128 | device | processes | devices | threads per device | images/s | speed-up | efficiency |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["framework"] != "torch", r["devices"], r["variant"])):
        base = one.get((r["device"], r["framework"]))
        speedup = f"{r['images_per_s'] / base:.2f}x" if base else "n/a"
        efficiency = f"{100 * r['images_per_s'] / (base * r['devices']):.0f}%" if base else "n/a"
        threads = r.get("threads_per_device") or "all"
        lines.append(f"| {r['variant']} | {r['device']} | {r['processes']} | {r['devices']} | {threads} | "
                     f"{r['images_per_s']:,.0f} | {speedup} | {efficiency} |")
    return "\n".join(lines)


def environment_line(rows: list[dict], when: str) -> str:
    r = rows[0]
    devices = sorted({f"{x['device']}: {x['device_name']}" for x in rows})
    line = (
        f"Measured {when[:10]} on {'; '.join(devices)}. torch {r['torch']}, jax {r['jax']} (jaxlib {r['jaxlib']}), "
        f"flax {r['flax']}, optax {r['optax']}, Python {r['python']}."
    )
    if any(x.get("dry_run") for x in rows):
        line = "**DRY RUN** (`--bench-dry-run`: one round of two batches per variant; the figures mean nothing). " + line
    return line


def bar_chart(rows: list[dict], path: Path, title: str) -> None:
    runs = [r for r in rows if r["mode"] not in OWN_TABLE and "images_per_s" in r]
    if not runs:  # only accuracy or latency results: no throughput to chart
        return
    groups = sorted({throughput_key(r) for r in runs})
    variants = sorted({r["variant"] for r in runs}, key=lambda v: (not v.startswith("torch"), v))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups)), 4.5))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        values = [next((r["images_per_s"] for r in runs if throughput_key(r) == g and r["variant"] == variant), 0) for g in groups]
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=variant)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\n{d} b{b}\n{p}" for m, d, b, p in groups], fontsize=8)
    ax.set_ylabel("images / s")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pytest-benchmark JSON -> Markdown table and PNG bar chart")
    parser.add_argument("results", type=Path, nargs="+", help="the file(s) from --benchmark-json")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the .md and .png go (default: beside the first JSON)")
    parser.add_argument("--name", default=None, help="file name stem of what is written (default: the first JSON's stem)")
    parser.add_argument("--title", default="PyTorch vs JAX, MNIST CNN: throughput (higher is better)")
    args = parser.parse_args(argv)

    data = merge([read_json(path) for path in args.results])
    rows, when = rows_of(data, " + ".join(map(str, args.results)))
    out_dir = args.out_dir or args.results[0].parent
    name = args.name or args.results[0].stem
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(args.results) > 1:
        (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    sections = [environment_line(rows, when), throughput_table(rows), latency_table(rows), accuracy_table(rows), scaling_table(rows)]
    markdown = "\n\n".join(s for s in sections if s) + "\n"
    (out_dir / f"{name}.md").write_text(markdown)
    bar_chart(rows, out_dir / f"{name}.png", args.title)
    print(markdown)


if __name__ == "__main__":
    main()

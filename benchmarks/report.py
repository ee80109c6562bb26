"""Turn a pytest-benchmark JSON into a Markdown table and a PNG bar chart.

Usage: python -m benchmarks.report RESULTS.json [--out-dir DIR] [--title TEXT]
Writes DIR/<name>.md and DIR/<name>.png (name: the JSON's stem) and prints the Markdown.
Ratios compare each variant with PyTorch eager on the same device, mode, batch size and precision.
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


def load_results(path: Path) -> tuple[list[dict], dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        sys.exit(f"error: cannot read {path} ({err}); expected the file written by `pytest benchmarks --benchmark-only --benchmark-json {path}`")
    rows = [b["extra_info"] for b in data.get("benchmarks", []) if b.get("extra_info", {}).get("variant")]
    if not rows:
        sys.exit(f"error: {path} holds no benchmark results with extra_info; was it run with --benchmark-disable?")
    return rows, data.get("datetime", "")


def seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def throughput_key(row: dict) -> tuple:
    return row["mode"], row["device"], row["batch_size"], row["precision"]


def throughput_table(rows: list[dict]) -> str:
    runs = [r for r in rows if r["mode"] != "accuracy" and "images_per_s" in r]
    baselines = {throughput_key(r): r["images_per_s"] for r in runs if r["variant"] == BASELINE}
    lines = [
        "| mode | variant | device | batch | precision | images/s | vs PyTorch eager | compile s |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (*throughput_key(r), -r["images_per_s"])):
        base = baselines.get(throughput_key(r))
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else "n/a"
        lines.append(
            f"| {r['mode']} | {r['variant']} | {r['device']} | {r['batch_size']} | {r['precision']} | "
            f"{r['images_per_s']:,.0f} | {ratio} | {seconds(r['compile_seconds'])} |"
        )
    return "\n".join(lines)


def accuracy_table(rows: list[dict]) -> str:
    runs = [r for r in rows if r["mode"] == "accuracy"]
    if not runs:
        return ""
    lines = [
        "| framework | device | precision | epochs | test accuracy | time to 99% (s) | training s | compile s | original project |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["device"], r["framework"])):
        t99 = f"{r['time_to_99_s']:.1f}" if r["time_to_99_s"] is not None else "not reached"
        lines.append(
            f"| {r['framework']} | {r['device']} | {r['precision']} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% | "
            f"{t99} | {r['train_seconds']:.1f} | {seconds(r['compile_seconds'])} | {100 * r['original_accuracy']:.2f}% |"
        )
    return "\n".join(lines)


def environment_line(rows: list[dict], when: str) -> str:
    r = rows[0]
    devices = sorted({f"{x['device']}: {x['device_name']}" for x in rows})
    return (
        f"Measured {when[:10]} on {'; '.join(devices)}. torch {r['torch']}, jax {r['jax']} (jaxlib {r['jaxlib']}), "
        f"flax {r['flax']}, optax {r['optax']}, Python {r['python']}."
    )


def bar_chart(rows: list[dict], path: Path, title: str) -> None:
    runs = [r for r in rows if r["mode"] != "accuracy" and "images_per_s" in r]
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
    parser.add_argument("results", type=Path, help="the file from --benchmark-json")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the .md and .png go (default: beside the JSON)")
    parser.add_argument("--title", default="PyTorch vs JAX, MNIST CNN: throughput (higher is better)")
    args = parser.parse_args(argv)

    rows, when = load_results(args.results)
    out_dir = args.out_dir or args.results.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [environment_line(rows, when), throughput_table(rows), accuracy_table(rows)]
    markdown = "\n\n".join(s for s in sections if s) + "\n"
    (out_dir / f"{args.results.stem}.md").write_text(markdown)
    bar_chart(rows, out_dir / f"{args.results.stem}.png", args.title)
    print(markdown)


if __name__ == "__main__":
    main()

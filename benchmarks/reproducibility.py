"""Are two runs with the same flags the same run? Train twice, compare the bytes.

    python -m benchmarks.reproducibility OUT.json [--device cpu|cuda] [--epochs 2] [--train-size 6400]
        [--test-size 10000] [--cases jax,torch_eager,...]

runs every case below (or those --cases names) twice (each in its own out-dir, with JAX's persistent
compilation cache off, so that the second run compiles afresh as a first run on another day would), and records
per case whether
``weights.safetensors`` is byte-identical and whether ``metrics.json`` is identical apart from timings.
The trainers set what determinism needs themselves (``deterministic`` in both train modules); the
``jax_nondeterministic`` case (GPU only) turns JAX's off again (``--xla_gpu_deterministic_ops=false``:
autotuning and XLA's atomics-based GPU kernels back on), to show what it costs and what it changes.
On the CPU, tests/test_cli.py (e2e) holds a fresh process to the in-process run's bytes; benchmarks/gpu_run.sh
records the GPU's answer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mnist_common.config import NUM_TEST

#: metrics.json fields that are measurements of time, or name the out-dir: they may differ between runs.
TIMING_FIELDS = {"seconds", "images_per_s", "compile_seconds", "compilation_cache", "out_dir"}


def without_timings(value: Any) -> Any:
    """A metrics.json value with every timing field dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def cases(device: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """label: (the trainer's module and flags, extra environment)."""
    runs = {
        "jax": (["mnist_jax.train"], {}),
        "torch_eager": (["mnist_torch.train"], {}),
    }
    if device == "cuda":
        flags = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=false").strip()
        runs["jax_nondeterministic"] = (["mnist_jax.train"], {"XLA_FLAGS": flags})
        runs["torch_cudagraph"] = (["mnist_torch.train", "--mode", "cuda-graphs"], {})
    return runs


def train(
    command: list[str], env: dict[str, str], out_dir: Path, device: str, epochs: int, train_size: int, test_size: int
) -> dict[str, Any]:
    """One training run; its weights' SHA-256, metrics.json and wall seconds (or the error it ended with)."""
    argv = [
        sys.executable,
        "-m",
        *command,
        "--device",
        device,
        "--epochs",
        str(epochs),
        "--train-size",
        str(train_size),
        "--test-size",
        str(test_size),
        "--out-dir",
        str(out_dir),
        "--quiet",
    ]
    start = time.perf_counter()
    done = subprocess.run(
        argv, env={**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false", **env}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1], "wall_seconds": seconds}
    weights = (out_dir / "weights.safetensors").read_bytes()
    metrics = json.loads((out_dir / "metrics.json").read_text())
    return {"weights_sha256": hashlib.sha256(weights).hexdigest(), "metrics": metrics, "wall_seconds": seconds}


def compare_twice(
    command: list[str], env: dict[str, str], work: Path, device: str, epochs: int, train_size: int, test_size: int
) -> dict[str, Any]:
    """Train twice with the same flags; say whether the weights' bytes and the non-timing metrics agree."""
    first, second = (train(command, env, work / f"run{i}", device, epochs, train_size, test_size) for i in (1, 2))
    result: dict[str, Any] = {
        "command": " ".join(command),
        "env": env,
        "device": device,
        "epochs": epochs,
        "train_size": train_size,
        "test_size": test_size,
    }
    if "error" in first or "error" in second:
        return {**result, "error": first.get("error") or second.get("error")}
    return {
        **result,
        "weights_identical": first["weights_sha256"] == second["weights_sha256"],
        "metrics_identical": without_timings(first["metrics"]) == without_timings(second["metrics"]),
        "weights_sha256": [first["weights_sha256"], second["weights_sha256"]],
        "test_accuracy": [first["metrics"]["test_accuracy"], second["metrics"]["test_accuracy"]],
        "train_loss": [[e["train_loss"] for e in r["metrics"]["epochs"]] for r in (first, second)],
        "seconds_per_epoch": [sum(e["seconds"] for e in r["metrics"]["epochs"]) / epochs for r in (first, second)],
    }


def unwritable(out: Path) -> str | None:
    """Why the results could not be written to `out`, or None: checked first, so that no training is lost."""
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        return f"{out} is a folder; give a file name for the JSON results, e.g. {out / 'repro.json'}"
    if out.exists() and not out.is_file():
        return f"{out} is not a regular file; give a file name for the JSON results"
    if not parent.is_dir():
        existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():  # a file where a folder should be: say so
            return f"{existing} is a file, not a folder, so {out} cannot be written; give another path for the results"
        return f"the folder {parent} does not exist; create it or give another path for the JSON results"
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        return f"cannot write {out}; give a path you can write to"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m benchmarks.reproducibility", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", type=Path, help="where to write the JSON results")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=6400)
    parser.add_argument("--test-size", type=int, default=NUM_TEST)
    parser.add_argument(
        "--cases", help="comma-separated labels of the cases to run (default: all of the device's); the dry run's one"
    )
    args = parser.parse_args(argv)
    problem = unwritable(args.out)
    if problem:  # before minutes of training, not after them
        parser.exit(2, f"error: {problem}\n")
    chosen = cases(args.device)
    if args.cases is not None:
        asked = args.cases.split(",")
        if unknown := [label for label in asked if label not in chosen]:
            parser.error(f"argument --cases: {', '.join(unknown)} not among {args.device}'s cases {', '.join(chosen)}")
        chosen = {label: chosen[label] for label in asked}
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for label, (command, env) in chosen.items():
            results[label] = compare_twice(
                command, env, Path(work) / label, args.device, args.epochs, args.train_size, args.test_size
            )
            r = results[label]
            verdict = r.get("error") or (
                f"weights {'identical' if r['weights_identical'] else 'DIFFER'}, metrics "
                f"{'identical' if r['metrics_identical'] else 'DIFFER'} apart from timings, "
                f"{100 * r['test_accuracy'][0]:.2f}% / {100 * r['test_accuracy'][1]:.2f}%, "
                f"{r['seconds_per_epoch'][0]:.3f} / {r['seconds_per_epoch'][1]:.3f} s/epoch"
            )
            print(f"reproducibility {label} on {args.device}: {verdict}", flush=True)
            args.out.write_text(
                json.dumps(results, indent=1) + "\n"
            )  # after each pair: a run cut short keeps those done
    if any(
        "error" in r for r in results.values()
    ):  # runs that differ are a finding, recorded above; a crash is a failure
        sys.exit(1)


if __name__ == "__main__":
    main()

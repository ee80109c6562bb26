"""Question: which XLA:GPU settings give the JAX trainer byte-identical reruns at (nearly) the non-deterministic speed?

Date: 2026-11-30. Answer: not yet measured on a GPU: prepared on that date for the next lease (benchmarks/LOG.md,
"Prepared for the next lease"); gpu_run.sh's dry run (.ci/run) checks the code path on the CPU. The tax it takes
apart was measured on the H200 (2026-11-30): 1.23x per epoch over a full run (benchmarks/RESULTS.md, "The GPU run").

    python -m experiments.gpu_candidates OUT_STEM [--device cuda|cpu] [--budget SECONDS] [--rounds N] [--epochs E]
        [--train-size N] [--candidates a,b,...] [--dry-run]

Why: the JAX trainer runs an epoch per call on a GPU (`train_epoch_steps`) and, for byte-identical reruns, sets
``--xla_gpu_deterministic_ops=true``, which costs a large factor per epoch there. That flag does two things: it
turns autotuning off and it excludes kernels that accumulate with atomics. The candidates below take the tax
apart, and try step variants that might shrink it. XLA reads XLA_FLAGS once, when its backend starts, so every
candidate runs in its own fresh process (a *worker*), interleaved round by round, each timing its compile, its
first epoch call and E more epoch calls, and hashing the final parameters. What each candidate answers:

- shipped: the baseline, the trainer as it is (deterministic ops, persistent cache on);
- nondeterministic: XLA's default, the speed to reach;
- exclude_nondet: atomics excluded, autotuning kept, no cache: does autotuning afresh in each process alone break
  byte-identity?
- exclude_nondet_cached: the same, but later rounds load round 1's executable: does the cache freeze the choice?
- exclude_nondet_autotune_file: the same, with round 1's autotuning results stored by XLA and loaded by later rounds;
- nondet_autotune0: atomics allowed, no autotuning: the other half of the tax, beside exclude_nondet;
- command_buffer_while: shipped, with the epoch's while loop recorded into CUDA command buffers (fewer launches);
- conv1_matmul: shipped, conv1 as one matmul (the CPU trainer's model) instead of a one-channel convolution;
- optax_loss: shipped, with the old loss whose gradient is a scatter-add: what the one-hot loss saves;
- optax_loss_nondet: the old loss at XLA's default;
- nchw: shipped, convolutions in NCHW/OIHW logical layout: does the layout XLA is given matter to cuDNN?

The one to adopt is the fastest candidate that is byte-identical across its rounds (the .md's verdict, computed).
OUT_STEM.json and OUT_STEM.md are rewritten after every worker, so a run cut off keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import conditions, stats
from mnist_common import interrupts
from mnist_common.config import TrainConfig
from mnist_common.files import write_atomically

BATCH_SIZE = TrainConfig.batch_size  # the trainers' defaults
SEED = TrainConfig.seed
DETERMINISTIC = "--xla_gpu_deterministic_ops=true"
EXCLUDE_NONDET = "--xla_gpu_exclude_nondeterministic_ops=true"
#: Command types recorded into command buffers: XLA's usual ones plus WHILE and CONDITIONAL, listed in full.
COMMAND_BUFFER_WHILE = "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"
#: The verdict's goal: the adopted candidate runs at >= 91% of the non-deterministic speed (within 10%).
GOAL_VS_NONDETERMINISTIC = 0.91
DEFAULT_BUDGET = 240.0
#: --dry-run's sizes: two steps per call (so the scan keeps its while loop), two rounds (so byte-identity is checked),
#: batches of 16: on the CPU the rolled scan's backward convolutions run in XLA's naive emitter, and at batch 128 its
#: four steps took most of each worker's seconds.
DRY_RUN = {"device": "cpu", "batch_size": 16, "train_size": 32, "epochs": 1, "rounds": 2, "budget": 3600.0}


@dataclass(frozen=True)
class Candidate:
    sets: str  # what it sets, in words, for the table
    flags: tuple[str, ...] = ()  # XLA_FLAGS, replacing the trainer's own
    cache: str = "shared"  # "shared": one persistent cache dir across its rounds; "off": none
    model: str = "cnn"  # "cnn" (create_state), "conv1_matmul" or "nchw"
    loss: str = "one_hot"  # "one_hot" (jax_steps.cross_entropy) or "optax"
    autotune_file: bool = False  # round 1 dumps XLA's autotuning results, later rounds load them
    deterministic: bool = True  # asks XLA for determinism (else identical bytes are luck, not a promise)


CANDIDATES: dict[str, Candidate] = {
    "shipped": Candidate("deterministic ops (the trainer today), cache on", (DETERMINISTIC,)),
    "nondeterministic": Candidate("no XLA_FLAGS (autotuning, atomics), cache on", deterministic=False),
    "exclude_nondet": Candidate("exclude non-deterministic ops, autotuning kept, cache off", (EXCLUDE_NONDET,), "off"),
    "exclude_nondet_cached": Candidate("exclude non-deterministic ops, cache shared across rounds", (EXCLUDE_NONDET,)),
    "exclude_nondet_autotune_file": Candidate(
        "exclude non-deterministic ops, autotuning dumped in round 1 and loaded later, cache off",
        (EXCLUDE_NONDET,),
        "off",
        autotune_file=True,
    ),
    "nondet_autotune0": Candidate(
        "--xla_gpu_autotune_level=0 (no autotuning, atomics allowed), cache on",
        ("--xla_gpu_autotune_level=0",),
        deterministic=False,
    ),
    "command_buffer_while": Candidate(
        "deterministic ops, command buffers with WHILE and CONDITIONAL, cache on", (DETERMINISTIC, COMMAND_BUFFER_WHILE)
    ),
    "conv1_matmul": Candidate(
        "deterministic ops, conv1 as one matmul, cache on", (DETERMINISTIC,), model="conv1_matmul"
    ),
    "optax_loss": Candidate(
        "deterministic ops, optax integer-label loss (scatter-add grad)", (DETERMINISTIC,), loss="optax"
    ),
    "optax_loss_nondet": Candidate("no XLA_FLAGS, optax integer-label loss", loss="optax", deterministic=False),
    "nchw": Candidate("deterministic ops, convolutions in NCHW/OIHW, cache on", (DETERMINISTIC,), model="nchw"),
}


class UsageError(Exception):
    """A bad command line: one line, exit 2."""


# --- the variants a worker trains ------------------------------------------------------------------------------


def nchw_apply(variables: dict, images: Any) -> Any:
    """`mnist_jax.model.CNN`'s logits from the same parameters, the convolutions in NCHW/OIHW dimension numbers.

    The kernels stay HWIO in the parameters (same tree, same bytes to hash) and are transposed at the call; the
    features are put back in (h, w, c) order before fc1, so that the CNN's own dense layers apply unchanged."""
    import jax
    import jax.numpy as jnp

    from mnist_jax.model import check_images, dense, relu

    check_images(images)
    params = variables["params"]

    def conv(x: Any, name: str) -> Any:
        kernel = jnp.transpose(params[name]["kernel"], (3, 2, 0, 1))  # HWIO -> OIHW
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + params[name]["bias"][None, :, None, None]

    def pool(x: Any) -> Any:  # 2x2 average, stride 2
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))

    x = jnp.transpose(images, (0, 3, 1, 2))
    x = pool(relu(conv(x, "conv1")))
    x = pool(relu(conv(x, "conv2")))
    x = jnp.transpose(x, (0, 2, 3, 1)).reshape(x.shape[0], -1)
    x = relu(dense(256, x.shape[-1], "fc1", None).apply({"params": params["fc1"]}, x))  # the CNN's own layers
    return dense(10, x.shape[-1], "fc2", None).apply({"params": params["fc2"]}, x)


def optax_loss(logits: Any, labels: Any) -> Any:
    """The trainer's old loss: `optax.softmax_cross_entropy_with_integer_labels`, its gradient a scatter-add."""
    import jax.numpy as jnp
    import optax

    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _optax_epoch(state: Any, data: Any, order: Any) -> Any:
    """`mnist_jax.tuned._train_epoch_steps` with `optax_loss` in place of `cross_entropy`."""
    import jax

    from mnist_jax.data import check_labels

    images, labels = data

    def step(state: Any, idx: Any) -> Any:
        x, y = images[idx], labels[idx]
        check_labels(x, y)
        loss, grads = jax.value_and_grad(lambda p: optax_loss(state.apply_fn({"params": p}, x), y))(state.params)
        return state.apply_gradients(grads=grads), {"loss": loss}

    return jax.lax.scan(step, state, order)


def epoch_function(loss: str) -> Callable:
    """The jitted whole-epoch function of a candidate's loss (the trainer's own for "one_hot")."""
    import jax

    from mnist_jax import tuned as jax_tuned

    if loss == "one_hot":
        return jax_tuned.train_epoch_steps
    return jax.jit(_optax_epoch, donate_argnums=0)


def make_state(model: str, device: Any) -> Any:
    """The TrainState a candidate trains: `create_state`'s, or the same parameters under a variant model."""
    import jax
    import jax.numpy as jnp
    from flax.training.train_state import TrainState

    from mnist_common.config import TrainConfig
    from mnist_jax import tuned as jax_tuned

    config = TrainConfig(seed=SEED, batch_size=BATCH_SIZE)
    # Traced and compiled as one program: run op by op, the initialization took seconds of every worker.
    state = jax.jit(lambda: jax_tuned.create_state(SEED, config, device))()
    if model == "cnn":
        return state
    tuned = jax_tuned.TunedCNN(dtype=jnp.float32, conv1_as_matmul=True)
    apply_fn = tuned.apply if model == "conv1_matmul" else nchw_apply
    return TrainState.create(apply_fn=apply_fn, params=state.params, tx=state.tx)


_OP = r"(?<![\w.%-]){}\("


def hlo_facts(text: str) -> dict[str, Any]:
    """What a compiled module's HLO text holds: scatter, while, sort, convolution and fusion counts, and every
    custom-call target with its count (cuDNN convolutions, fused conv+bias+activation, cuBLAS gemms)."""
    targets = Counter(re.findall(r'custom_call_target="([^"]+)"', text))
    return {
        "scatter": len(re.findall(_OP.format("scatter"), text)),
        "while": len(re.findall(_OP.format("while"), text)),
        "sort": len(re.findall(_OP.format("sort"), text)),
        "convolution": len(re.findall(_OP.format("convolution"), text)),
        "fusion": len(re.findall(_OP.format("fusion"), text)),
        "custom_calls": dict(sorted(targets.items())),
    }


def params_sha256(params: Any) -> str:
    """SHA-256 of every parameter leaf's bytes, in tree order."""
    import jax
    import numpy as np

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def worker(name: str, device_kind: str, epochs: int, train_size: int, batch_size: int) -> dict[str, Any]:
    """Train one candidate in this process as the environment says (XLA_FLAGS, the cache): times and facts."""
    from importlib.metadata import version

    import jax
    import numpy as np

    from mnist_common.batches import batch_order
    from mnist_jax import tuned as jax_tuned
    from mnist_jax.compilation_cache import count_cache_lookups, use_compilation_cache
    from mnist_jax.data import load_mnist

    candidate = CANDIDATES[name]
    cache_dir = use_compilation_cache()
    device = jax.devices("gpu" if device_kind == "cuda" else "cpu")[0]
    data = load_mnist().train
    resident = jax.device_put((data.images[:train_size], data.labels[:train_size]), device)
    state = jax.device_put(make_state(candidate.model, device), device)
    epoch_fn = epoch_function(candidate.loss)

    def order(epoch: int) -> Any:  # the trainer's batch order (`mnist_jax.train.epoch_order`), uploaded per epoch
        return jax.device_put(batch_order(SEED, epoch, train_size, batch_size).astype(np.int32), device)

    start = time.perf_counter()
    with count_cache_lookups() as lookups:
        compiled = jax_tuned.compile_train(epoch_fn.lower(state, resident, order(1)), device.platform)
    compile_s = time.perf_counter() - start
    seconds, losses = [], []
    for epoch in range(1, epochs + 2):
        start = time.perf_counter()
        state, metrics = compiled(state, resident, order(epoch))
        jax.block_until_ready((state, metrics))
        seconds.append(time.perf_counter() - start)
        losses.append(float(np.mean(np.asarray(metrics["loss"]))))
    images = (train_size // batch_size) * batch_size
    return {
        "candidate": name,
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "cache_lookups": lookups,
        "compile_s": compile_s,
        "first_call_s": seconds[0],
        "epoch_s": seconds[1:],
        "images_per_s": images / stats.median(seconds[1:]),
        "epoch_losses": losses,
        "params_sha256": params_sha256(state.params),
        "hlo": hlo_facts(compiled.as_text()),
        "device": f"{device.platform}: {device.device_kind}",
        "versions": {p: version(p) for p in ("jax", "jaxlib", "flax", "optax")},
    }


# --- the orchestrator --------------------------------------------------------------------------------------------


def failure(returncode: int, stderr: str) -> str:
    """A failed worker in one line: "refused by this XLA: ..." for a flag, or a flag's value, that XLA does not know
    (it aborts the process at start), else the exit and the most telling line of its stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    refused = r"unknown flags? in XLA_FLAGS|illegal value for --xla_"  # XLA's words, then its usage text
    unknown = next((line for line in lines if re.search(refused, line, re.I)), None)
    if unknown:
        return f"refused by this XLA: {unknown}"
    telling = next((line for line in reversed(lines) if re.search(r"error|exception", line, re.I)), None)
    return f"failed (exit {returncode}): {telling or (lines[-1] if lines else 'no output')}"


def worker_env(candidate: Candidate, device: str, cache_dir: Path, autotune: Path, round_: int) -> dict[str, str]:
    """The worker's environment: the candidate's XLA_FLAGS alone and its cache setting."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    flags = list(candidate.flags)
    if candidate.autotune_file:
        verb = "dump_autotune_results_to" if round_ == 1 else "load_autotune_results_from"
        flags.append(f"--xla_gpu_{verb}={autotune}")
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    if candidate.cache == "off":
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    else:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "true"
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(conditions.REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_worker(
    name: str, round_: int, args: argparse.Namespace, work: Path, timeout: float
) -> tuple[dict[str, Any], float]:
    """One worker in a fresh process; its result (or {"error": ...}) and its wall seconds."""
    candidate = CANDIDATES[name]
    result_file = work / f"{name}-round{round_}.json"
    env = worker_env(candidate, args.device, work / "cache" / name, work / f"{name}-autotune.textproto", round_)
    argv = [sys.executable, "-m", "experiments.gpu_candidates", str(result_file), "--worker", name]
    argv += ["--device", args.device, "--epochs", str(args.epochs), "--train-size", str(args.train_size)]
    argv += ["--batch-size", str(args.batch_size)]
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, cwd=conditions.REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"cut off by the budget after {timeout:.0f} s"}, time.perf_counter() - start
    wall = time.perf_counter() - start
    if done.returncode != 0 or not result_file.is_file():
        return {"error": failure(done.returncode, done.stderr)}, wall
    result = json.loads(result_file.read_text())
    if candidate.autotune_file and round_ == 1:
        written = work / f"{name}-autotune.textproto"
        result["autotune_file_bytes"] = written.stat().st_size if written.is_file() else None
    tail = [line for line in done.stderr.splitlines() if line.strip()][-5:]  # XLA's warnings, if any: for the JSON
    return {**result, "wall_s": wall, "stderr_tail": tail}, wall


def paired_epochs(runs: dict[str, list[dict[str, Any]]], name: str, rounds: int) -> list[float | None]:
    """A candidate's epoch seconds by (round, epoch index), None where it has none: two candidates' lists pair the
    epochs that ran in the same round at the same place, minutes apart at most (`stats.paired_speed_ratio`)."""
    got = {r["round"]: r["epoch_s"] for r in runs.get(name, []) if "epoch_s" in r}
    epochs = max((len(e) for e in got.values()), default=0)
    return [got[i][j] if i in got and j < len(got[i]) else None for i in range(1, rounds + 1) for j in range(epochs)]


def summarize(runs: dict[str, list[dict[str, Any]]], rounds: int) -> dict[str, dict[str, Any]]:
    """Per candidate: its epoch seconds' median and interval, paired speed vs shipped, first-call extra, compile,
    byte-identity across rounds and the HLO facts."""

    out = {}
    for name, results in runs.items():
        ok = [r for r in results if "epoch_s" in r]
        errors = [r["error"] for r in results if "error" in r]
        entry: dict[str, Any] = {"rounds": len(ok), "errors": errors}
        if any("autotune_file_bytes" in r and not r["autotune_file_bytes"] for r in ok):
            entry["note"] = "XLA wrote no autotuning results file in round 1 (on a GPU: later rounds skipped)"
        if ok:
            epochs = [s for r in ok for s in r["epoch_s"]]
            median, low, high = stats.median_interval(epochs)
            digests = {r["params_sha256"] for r in ok}
            entry.update(
                epoch_s={"median": median, "low": low, "high": high},
                vs_shipped=stats.paired_speed_ratio(
                    paired_epochs(runs, name, rounds), paired_epochs(runs, "shipped", rounds)
                ),
                first_call_extra_s=stats.median([r["first_call_s"] - stats.median(r["epoch_s"]) for r in ok]),
                compile_s=[r["compile_s"] for r in ok],
                compile_loaded=[r["cache_lookups"]["hits"] > 0 for r in ok],
                byte_identical=None if len(ok) < 2 else len(digests) == 1,
                hlo=ok[0]["hlo"],
                final_loss=ok[-1]["epoch_losses"][-1],
            )
        out[name] = entry
    return out


def verdict(summary: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]], rounds: int) -> dict[str, Any]:
    """The fastest candidate that asks XLA for determinism and was byte-identical across its rounds, and its paired
    speed vs `nondeterministic` against the goal."""

    identical = [n for n, s in summary.items() if s.get("byte_identical")]
    promised = [n for n in identical if CANDIDATES[n].deterministic]
    if not promised:
        return {"candidate": None, "line": "no candidate that asks for determinism was byte-identical across 2+ rounds"}
    best = min(promised, key=lambda n: summary[n]["epoch_s"]["median"])
    ratio = stats.paired_speed_ratio(paired_epochs(runs, best, rounds), paired_epochs(runs, "nondeterministic", rounds))
    fastest_any = min(identical, key=lambda n: summary[n]["epoch_s"]["median"])
    if ratio["ratio"] is None:
        judged = "not comparable: `nondeterministic` has no round beside it"
    else:
        judged = (
            f"{_ratio(ratio)} of the non-deterministic speed; goal >= {GOAL_VS_NONDETERMINISTIC}: "
            f"{stats.verdict(ratio, GOAL_VS_NONDETERMINISTIC)}"
        )
    line = f"adopt `{best}` ({summary[best]['epoch_s']['median']:.4f} s/epoch): {judged}"
    if fastest_any != best:
        line += (
            f". `{fastest_any}` was faster and byte-identical here too, but asks XLA for no determinism: "
            "identical bytes there are luck, not a promise"
        )
    return {"candidate": best, "vs_nondeterministic": ratio, "line": line}


def _ratio(r: dict[str, Any]) -> str:
    if r.get("ratio") is None:
        return "—"
    interval = f" [{r['low']:.2f}-{r['high']:.2f}]" if r.get("low") is not None else ""
    return f"{r['ratio']:.2f}x{interval}"


def _compiles(entry: dict[str, Any]) -> str:
    pairs = zip(entry["compile_s"], entry["compile_loaded"])
    return " / ".join(f"{c:.2f}{' (cache)' if hit else ''}" for c, hit in pairs)


def _calls(custom_calls: dict[str, int]) -> str:
    return ", ".join(f"{t} x{c}" for t, c in custom_calls.items()) or "none"


def markdown(report: dict[str, Any]) -> str:
    """The .md: header, settings, one table row per candidate, the verdict."""
    s = report["settings"]
    env = report.get("environment") or {}
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()) or "versions unknown"
    lines = [
        f"# XLA:GPU determinism candidates, {s['device']}",
        "",
        f"{report['started']} on {env.get('device', s['device'])}; {versions}; budget {s['budget_s']:.0f} s, "
        f"{report['complete_rounds']} of {s['rounds']} rounds complete in {report['elapsed_s']:.0f} s"
        f"{' (' + report['stopped'] + ')' if report.get('stopped') else ''}; train size {s['train_size']}, "
        f"{s['epochs']} timed epochs per round after the first call.",
        "",
        f"Settings: batch {s.get('batch_size', BATCH_SIZE)}, float32, batch order seed {SEED} (the trainer's "
        "`batch_order`), the trainer's "
        "whole-epoch scan (`train_epoch_steps`, `compile_train`), each candidate in a fresh process per round, "
        "interleaved; s/epoch over every timed epoch of every round (median, 95% bootstrap interval); speed vs shipped "
        "paired by round and epoch index (each epoch against the baseline's same epoch of the same round); "
        "compile '(cache)': loaded from the persistent cache; byte-identical: the final parameters' SHA-256 equal "
        "across the candidate's rounds.",
        "",
        "| candidate | what it sets | rounds | s/epoch [95%] | speed vs shipped | first-call extra s | compile s "
        "(each round) | byte-identical | scatters | custom calls |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, entry in report["summary"].items():
        sets = CANDIDATES[name].sets
        if not entry["rounds"]:
            lines.append(f"| {name} | {sets} | 0 | {entry['errors'][-1] if entry['errors'] else 'not run'} |||||||")
            continue
        e = entry["epoch_s"]
        interval = f" [{e['low']:.4f}-{e['high']:.4f}]" if e["low"] is not None else ""
        identical = {None: "—", True: "yes", False: "no"}[entry["byte_identical"]]
        errors = f" ({len(entry['errors'])} failed: {entry['errors'][-1]})" if entry["errors"] else ""
        errors += f" ({entry['note']})" if entry.get("note") else ""
        lines.append(
            f"| {name} | {sets} | {entry['rounds']}{errors} | {e['median']:.4f}{interval} "
            f"| {_ratio(entry['vs_shipped'])} "
            f"| {entry['first_call_extra_s']:.3f} | {_compiles(entry)} | {identical} "
            f"| {entry['hlo']['scatter']} | {_calls(entry['hlo']['custom_calls'])} |"
        )
    lines += ["", "## Verdict", "", f"**Verdict:** {report['verdict']['line']}.", ""]
    return "\n".join(lines)


def write_report(stem: Path, report: dict[str, Any]) -> None:
    write_atomically(f"{stem}.json", lambda p: p.write_text(json.dumps(report, indent=1) + "\n"))
    write_atomically(f"{stem}.md", lambda p: p.write_text(markdown(report)))


def gpu_problem() -> str | None:
    """Why --device cuda cannot run here, or None: no NVIDIA device node, or JAX sees no GPU (asked in a short-lived
    process, so that this one holds no GPU memory while the workers run)."""
    if not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None:
        return "--device cuda was asked for, but this machine has no NVIDIA GPU (no /dev/nvidiactl, no nvidia-smi)"
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices('gpu')"],
        env={**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"},
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"--device cuda was asked for, but JAX sees no GPU ({last})"
    return None


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m experiments.gpu_candidates", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out_stem", type=Path, help="writes OUT_STEM.json and OUT_STEM.md")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument(
        "--budget", type=float, default=None, help=f"seconds for the whole run (default {DEFAULT_BUDGET:.0f})"
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="timed epoch calls per round, after the first")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument(
        "--batch-size", type=int, default=None, help=f"default {BATCH_SIZE} ({DRY_RUN['batch_size']} in a dry run)"
    )
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated, from: %(default)s")
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes: checks the command runs")
    parser.add_argument("--worker", choices=list(CANDIDATES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dry = (
        DRY_RUN
        if args.dry_run
        else {
            "device": "cuda",
            "batch_size": BATCH_SIZE,
            "train_size": 60000,
            "epochs": 5,
            "rounds": 3,
            "budget": DEFAULT_BUDGET,
        }
    )
    for key, value in dry.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.dry_run and args.device != "cpu":
        raise UsageError("--dry-run runs on the CPU; drop --device cuda, or drop --dry-run to measure on the GPU")
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown or not names:
        raise UsageError(
            f"--candidates: unknown candidate {', '.join(map(repr, unknown)) or '(none given)'}; expected a "
            f"comma-separated list from: {', '.join(CANDIDATES)}"
        )
    args.candidates = list(dict.fromkeys(names))
    if not 1 <= args.rounds <= 100 or not 1 <= args.epochs <= 1000:
        raise UsageError(f"--rounds takes 1-100 and --epochs 1-1000, got {args.rounds} and {args.epochs}")
    if not 1 <= args.batch_size <= 60000 or not args.batch_size <= args.train_size <= 60000:
        raise UsageError(
            f"--train-size takes {args.batch_size}-60000 images (one batch of --batch-size {args.batch_size} at least) "
            f"and --batch-size 1-60000, got {args.train_size} and {args.batch_size}"
        )
    if not args.budget > 0:
        raise UsageError(f"--budget takes a positive number of seconds, got {args.budget}")
    if args.worker is None:
        parent = args.out_stem.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UsageError(
                f"cannot write OUT_STEM {args.out_stem}: {parent} is not a writable folder; create it or "
                "give another path"
            )
    return args


def orchestrate(args: argparse.Namespace) -> int:
    """Run the workers round by round inside the budget, rewriting OUT_STEM.json/.md after each; 0 when every
    worker that started measured (a flag this XLA refuses counts as a finding, not a failure)."""
    started = time.perf_counter()
    if args.device == "cuda" and (problem := gpu_problem()) is not None:
        raise UsageError(f"{problem}; run on a machine with an NVIDIA GPU, or use --dry-run to check on the CPU")
    settings = {k: getattr(args, k) for k in ("device", "rounds", "epochs", "train_size", "batch_size")}
    settings.update(budget_s=args.budget, candidates=args.candidates, dry_run=args.dry_run)
    settings.update(dtype="float32", order_seed=SEED)
    report: dict[str, Any] = {
        "settings": settings,
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": None,
        "complete_rounds": 0,
        "stopped": None,
        "elapsed_s": 0.0,
        "candidates": {n: {"sets": CANDIDATES[n].sets, "runs": []} for n in args.candidates},
    }
    runs: dict[str, list[dict[str, Any]]] = {n: report["candidates"][n]["runs"] for n in args.candidates}
    walls: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="gpu_candidates-"))
    failed = 0
    try:
        for round_ in range(1, args.rounds + 1):
            for name in args.candidates:
                if any("refused by this XLA" in r.get("error", "") for r in runs[name]):
                    continue  # it would be refused again
                if CANDIDATES[name].autotune_file and round_ > 1 and args.device == "cuda":
                    first = next((r for r in runs[name] if r["round"] == 1), {})
                    if not first.get("autotune_file_bytes"):
                        continue  # nothing to load: recorded in round 1's result
                left = args.budget - (time.perf_counter() - started)
                estimate = walls.get(name) or (sum(walls.values()) / len(walls) if walls else 0.0)
                if estimate > left:
                    report["stopped"] = f"budget: {name} round {round_} would take ~{estimate:.0f} s, {left:.0f} s left"
                    continue
                print(f"gpu_candidates: round {round_}, {name} ({left:.0f} s left)", file=sys.stderr, flush=True)
                result, walls[name] = run_worker(name, round_, args, work, left)
                failed += "error" in result and "refused by this XLA" not in result["error"]
                runs[name].append({"round": round_, **result})
                if "error" in result:
                    print(f"gpu_candidates: {name} round {round_}: {result['error']}", file=sys.stderr, flush=True)
                elif report["environment"] is None:
                    report["environment"] = {"device": result["device"], "versions": result["versions"]}
                update(report, runs, args, started)
                write_report(args.out_stem, report)
            if report["stopped"] is None:
                report["complete_rounds"] = round_
    finally:
        shutil.rmtree(work, ignore_errors=True)
    update(report, runs, args, started)
    write_report(args.out_stem, report)
    print(markdown(report), flush=True)
    return 1 if failed else 0


def update(report: dict[str, Any], runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, t0: float) -> None:
    report["elapsed_s"] = time.perf_counter() - t0
    report["summary"] = summarize(runs, args.rounds)
    report["verdict"] = verdict(report["summary"], runs, args.rounds)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        args = parse(argv)
        if args.worker is not None:
            interrupts.skip_final_collection()  # as the trainers do: its wall time is the orchestrator's budget
            result = worker(args.worker, args.device, args.epochs, args.train_size, args.batch_size)
            write_atomically(args.out_stem, lambda p: p.write_text(json.dumps(result) + "\n"))
            return
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a running worker is killed, the files are kept
        sys.exit(orchestrate(args))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

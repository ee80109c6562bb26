"""Question: where does a training step's time go, kernel by kernel, in each framework's training path?

Date: 2026-11-30. Answer: on the CPU (2-core AMD EPYC, batch 128, float32), in the convolutions: 30 of JAX's 45 ms
per step, 34 of PyTorch's 55; JAX gains in the elementwise passes around them (its fusions ~7 ms, where eager spends
21 ms on pooling alone and Inductor 12 ms); benchmarks/RESULTS.md, "Where a training step's time goes", tables in
benchmarks/results/profile-cpu-2core.md. On a GPU, with and without XLA's deterministic ops: not yet measured; the
dry run of gpu_run.sh (.ci/run) checks the code path.

A per-kernel profile of each framework's training path on one device:
``python -m experiments.profile --device cpu|cuda --batch-size 128 --out STEM [--steps N] [--smoke]`` writes
STEM.json and STEM.md, one table per path: the trainers' own paths, built as `benchmarks.runners` builds the
throughput suite's rounds (the same step functions, data, threads and settings). JAX: on the CPU
`train_steps` with FUSED_STEPS unrolled steps per call, compiled by `compile_train` (so with the CPU training
compiler options); on a GPU `train_epoch_steps`. PyTorch: eager and `torch.compile` (--mode compile), and on a
GPU the CUDA-graph step (--mode cuda-graphs).

How it is measured: two warm-up rounds, then N steps under the framework's profiler, captured as the trainers'
--profile captures (`mnist_jax.profiling`, `mnist_torch.profiling`). JAX: `jax.profiler.trace`,
whose trace JSON is parsed here; the events that name an HLO instruction (``args.hlo_op``) count. On a GPU they
are the kernels on the device's streams, each its own duration. On the CPU they are XLA's thunks, and a
multithreaded convolution or dot is asynchronous: its event covers only its launch, and an ``end: NAME`` event
marks when its work is done; an op runs from its start to that end, and each moment is split evenly among the
ops running then (XLA runs independent thunks at once), so nothing is counted twice. Unrolled steps are copies
of one step with new instruction names, so rows group the instructions that do the same thing: pass, layer,
main ops and output shape, described from the compiled HLO (`Compiled.as_text()`). PyTorch: `torch.profiler`,
each op's *self* time (CPU self time on the CPU, device time on a GPU), so that no time is counted twice and the
shares add up to 100%. Profiling slows a step: each table also gives the last unprofiled warm-up round's time.

How to read a table: ms per step and share of the *profiled* total, the biggest rows, "other" for the rest.
"wall per step" is timed around the profiled steps (profiler overhead included); "profiled / wall" says how
much of it the table covers (what is missing: time between ops, Python and dispatch, the profiler's own).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gzip
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import conditions
from mnist_common.machine import cpu_identity, describe_cpu

#: The paths profiled on each device, as `benchmarks.runners` names its variants.
PATHS = {
    "cpu": ("jax_scan_unrolled", "torch_eager", "torch_compile"),
    "cuda": ("jax_epoch", "torch_eager", "torch_cudagraph", "torch_compile"),
}
#: Profiled steps by default: 2 calls of FUSED_STEPS on the CPU; 2 calls of a throughput round on a GPU.
DEFAULT_STEPS = {"cpu": 32, "cuda": 256}
#: Steps per JAX call on a GPU (the throughput suite's round at batch 128); the CPU's is FUSED_STEPS.
GPU_STEPS_PER_CALL = 128
SMOKE_STEPS = 2
TOP_ROWS = 12
PRECISION = "float32"

# The rows of the trace JSON that TensorBoard derives from the device's kernels (they repeat their time).
_DERIVED_LINES = ("XLA Ops", "XLA Modules", "Framework", "TensorFlow", "Steps", "Source", "Launch Stats")


class ProfileError(Exception):
    """A profile that cannot run as asked; the message is the one line to print."""


# --- the header --------------------------------------------------------------------------------------------


def header(device: str, batch_size: int, steps: int, threads: int) -> dict[str, Any]:
    import jax
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else describe_cpu()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "device_name": name,
        "cpu_name": describe_cpu(),
        "cpu": cpu_identity(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "flax": version("flax"),
        "python": platform.python_version(),
        "commit": conditions.provenance()["commit"] or "unknown",  # git's, else MNIST_BENCH_COMMIT's
        "batch_size": batch_size,
        "steps": steps,
        "precision": PRECISION,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


# --- tables ------------------------------------------------------------------------------------------------


def table(
    path: str,
    rows: dict[str, dict[str, Any]],
    steps: int,
    wall_seconds: float,
    time_kind: str,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One path's table from its rows {name: {"us": total microseconds, "count": events, ...}} over `steps`."""
    total_us = sum(r["us"] for r in rows.values())
    ranked = sorted(rows.items(), key=lambda kv: -kv[1]["us"])
    shown, rest = ranked[:TOP_ROWS], ranked[TOP_ROWS:]

    def row(name: str, us: float, count: float, **more: Any) -> dict[str, Any]:
        return {
            "name": name,
            "ms_per_step": us / 1000 / steps,
            "share_pct": 100 * us / total_us if total_us > 0 else 0.0,
            "calls_per_step": count / steps,
            **more,
        }

    out_rows = [
        row(n, r["us"], r["count"], **{k: v for k, v in r.items() if k not in ("us", "count")}) for n, r in shown
    ]
    other = row(f"other ({len(rest)} more)", sum(r["us"] for _, r in rest), sum(r["count"] for _, r in rest))
    total = row("total (profiled)", total_us, sum(r["count"] for r in rows.values()))
    wall_ms = 1000 * wall_seconds / steps
    return {
        "path": path,
        "time": time_kind,
        "steps": steps,
        "rows": out_rows,
        "other": other,
        "total": total,
        "wall_ms_per_step": wall_ms,
        "profiled_over_wall_pct": 100 * total["ms_per_step"] / wall_ms if wall_ms > 0 else None,
        "note": note,
        **(extra or {}),
    }


# --- JAX: the trace and the HLO ----------------------------------------------------------------------------

_INSTR = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[^\s=]+)\s*=\s*(?P<shape>\(.*?\)|\S+)\s+(?P<op>[\w\-]+)\((?P<rest>.*)$"
)
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[^\s(]+)\s*\(.*->.*\{\s*$")
_SHAPE = re.compile(r"[a-z]+\d*\[[\d,]*\]")
#: Opcodes that say little about an instruction's cost, left out of its description.
_PLUMBING = {
    "parameter",
    "constant",
    "bitcast",
    "broadcast",
    "tuple",
    "get-tuple-element",
    "reshape",
    "iota",
    "convert",
}
#: The ops a description names first, in this order; elementwise ops come after them.
_HEAVY = (
    "convolution",
    "custom-call",
    "dot",
    "reduce-window",
    "select-and-scatter",
    "scatter",
    "gather",
    "reduce",
    "sort",
    "transpose",
    "concatenate",
    "dynamic-update-slice",
    "dynamic-slice",
    "slice",
    "pad",
    "reverse",
    "copy",
)


def _strip_layout(shape: str) -> str:
    """f32[128,28,28,32]{3,2,1,0} -> f32[128,28,28,32]; a tuple -> its first array shape."""
    found = _SHAPE.findall(shape)
    return found[0] if found else shape


def _dims(shape: str) -> tuple[int, ...]:
    inside = shape[shape.find("[") + 1 : shape.find("]")]
    return tuple(sorted(int(d) for d in inside.split(",") if d))


def _phase_and_layer(op_name: str) -> tuple[str, str]:
    """("backward", "conv2") from "jit(_train_steps)/closed_call/transpose(jvp(CNN))/conv2/conv_general_dilated"."""
    parts = [p for p in op_name.split("/") if p and not p.startswith("jit(") and p != "closed_call"]
    if not parts:
        return "", ""
    phase = "backward" if parts[0].startswith("transpose(") else "forward" if parts[0].startswith("jvp(") else ""
    layer = "/".join(parts[1:-1]) if phase and "(" in parts[0] and "CNN" in parts[0] else ""
    return phase, layer


def describe_hlo(text: str) -> dict[str, str]:
    """A short description of every instruction of an optimized HLO module's text, by instruction name:
    pass and layer (from the JAX metadata), main ops (of a fusion, those of its computation), output shape.
    Best effort: an instruction this cannot parse is simply missing (its row keeps the raw name)."""
    computations: dict[str, list[dict[str, str]]] = {}
    instructions: dict[str, dict[str, str]] = {}
    entry_param_dims: set[tuple[int, ...]] = set()
    current: list[dict[str, str]] = []
    in_entry = False
    for line in text.splitlines():
        if " = " not in line and (m := _COMPUTATION.match(line.strip())):
            current = computations.setdefault(m["name"], [])
            in_entry = line.startswith("ENTRY")
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        rest = m["rest"]
        info = {"name": m["name"], "shape": _strip_layout(m["shape"]), "op": m["op"]}
        if called := re.search(r"calls=%?([\w.\-]+)", rest):
            info["calls"] = called[1]
        if target := re.search(r'custom_call_target="([^"]+)"', rest):
            info["op"] = f"custom-call {target[1]}"
        if op_name := re.search(r'op_name="([^"]+)"', rest):
            info["op_name"] = op_name[1]
        current.append(info)
        instructions[m["name"]] = info
        if in_entry and info["op"] == "parameter":
            entry_param_dims.add(_dims(info["shape"]))

    def ops_of(info: dict[str, str], depth: int = 0) -> list[dict[str, str]]:
        if "calls" in info and depth < 3:
            return [op for inner in computations.get(info["calls"], []) for op in ops_of(inner, depth + 1)]
        return [] if info["op"] in _PLUMBING else [info]

    def rank(op: str) -> int:
        base = op.split(" ")[0]
        return _HEAVY.index(base) if base in _HEAVY else len(_HEAVY)

    described = {}
    for name, info in instructions.items():
        ops = ops_of(info) or [info]
        names = sorted(dict.fromkeys(o["op"] for o in ops), key=rank)
        heavy = [o for o in sorted(ops, key=lambda o: rank(o["op"])) if "op_name" in o] or [info]
        phase, layer = _phase_and_layer(heavy[0].get("op_name", info.get("op_name", "")))
        what = " + ".join(names[:4]) + (" + ..." if len(names) > 4 else "")
        if names[0].startswith("convolution") and _dims(info["shape"]) in entry_param_dims and "Filter" not in what:
            what += " (filter gradient)"  # an output shaped like a parameter: a weight's gradient
            phase = phase or "backward"
        elif names[0].startswith("convolution") and phase == "backward":
            what += " (input gradient)"
        where = " ".join(x for x in (phase, layer) if x)
        described[name] = f"{where + ': ' if where else ''}{what} -> {info['shape']}"
    return described


def _load_trace(folder: Path) -> list[dict[str, Any]]:
    found = sorted(folder.rglob("perfetto_trace.json.gz")) or sorted(folder.rglob("*.trace.json.gz"))
    if not found:
        raise ProfileError(
            f"jax.profiler.trace wrote no trace JSON under {folder} (expected perfetto_trace.json.gz or "
            f"*.trace.json.gz); check that this jax ({version('jax')}) has its profiler (jax.profiler.trace)"
        )
    with gzip.open(found[-1], "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def trace_op_times(events: list[dict[str, Any]], device: str, module: str | None) -> tuple[dict, list[dict]]:
    """Self time (us) and count per HLO op from a JAX trace, and a summary of where the events were found.

    CPU: the events with ``args.hlo_op`` on the host's threads (XLA:CPU's thunks). GPU: the events on the
    device's stream lines (kernels, carrying ``args.hlo_op``; TensorBoard's derived lines are skipped).
    Only the events of `module` (``args.hlo_module``) count when any carry it."""
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {
        (e["pid"], e.get("tid")): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]

    def on_device(e: dict[str, Any]) -> bool:
        return "GPU" in processes.get(e["pid"], "") or "/device:" in processes.get(e["pid"], "")

    if device == "cuda":
        device_events = [
            e
            for e in complete
            if on_device(e) and not threads.get((e["pid"], e.get("tid")), "").startswith(_DERIVED_LINES)
        ]
        streams = [e for e in device_events if threads.get((e["pid"], e.get("tid")), "").startswith("Stream")]
        chosen = streams or device_events
    else:
        chosen = [e for e in complete if not on_device(e) and "hlo_op" in e.get("args", {})]
    if module and any(e.get("args", {}).get("hlo_module") == module for e in chosen):
        chosen = [e for e in chosen if e.get("args", {}).get("hlo_module") in (module, None)]

    if device == "cuda":
        ops = _self_times(chosen)
    else:
        ends = [e for e in complete if e["name"].startswith("end: ") and not on_device(e)]
        ops = _split_times(chosen, ends)
    counts = collections.Counter((e["pid"], e.get("tid")) for e in complete)
    chosen_counts = collections.Counter((e["pid"], e.get("tid")) for e in chosen)
    summary = [
        {
            "process": processes.get(pid, str(pid)),
            "thread": threads.get((pid, tid), str(tid)),
            "events": n,
            "op_events": chosen_counts.get((pid, tid), 0),
        }
        for (pid, tid), n in counts.most_common(12)
    ]
    return ops, summary


def _op_entry(ops: dict[str, dict[str, Any]], e: dict[str, Any]) -> dict[str, Any]:
    op = e.get("args", {}).get("hlo_op") or e["name"]
    entry = ops.setdefault(op, {"us": 0.0, "count": 0, "kernels": set()})
    entry["count"] += 1
    if e["name"] != op:
        entry["kernels"].add(e["name"])
    return entry


def _self_times(chosen: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """GPU kernels: each event's duration less that of the events nested in it on the same line."""
    by_thread: dict[tuple, list[dict]] = collections.defaultdict(list)
    for e in chosen:
        by_thread[(e["pid"], e.get("tid"))].append(e)
    self_us: dict[int, float] = {}
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[dict] = []
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            self_us[id(e)] = e["dur"]
            if stack:
                self_us[id(stack[-1])] -= e["dur"]
            stack.append(e)
    ops: dict[str, dict[str, Any]] = {}
    for e in chosen:
        _op_entry(ops, e)["us"] += max(self_us[id(e)], 0.0)
    return ops


def _split_times(starts: list[dict[str, Any]], ends: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """XLA:CPU thunks: an op runs from its event's start to its ``end: NAME`` event (an asynchronous thunk, such as
    a multithreaded convolution, returns long before its work is done, so its own event covers only the
    launch), and each moment of the step is split evenly among the ops running then. The rows add up to the
    time at least one op ran, and no moment is counted twice."""
    intervals = []  # (start, end, event)
    open_by_name: dict[str, list[list]] = collections.defaultdict(list)
    marks = sorted([(e["ts"], 0, i) for i, e in enumerate(starts)] + [(e["ts"], 1, i) for i, e in enumerate(ends)])
    for _, kind, i in marks:
        if kind == 0:
            e = starts[i]
            interval = [e["ts"], e["ts"] + e["dur"], e]
            intervals.append(interval)
            open_by_name[e["name"]].append(interval)
        else:
            e = ends[i]
            pending = open_by_name.get(e["name"][len("end: ") :])
            if pending:
                interval = pending.pop()
                interval[1] = max(interval[1], e["ts"] + e["dur"])
    points = sorted({t for a, b, _ in intervals for t in (a, b)})
    index = {t: k for k, t in enumerate(points)}
    share = [0] * (len(points) + 1)  # running ops per segment, by a difference array
    for a, b, _ in intervals:
        share[index[a]] += 1
        share[index[b]] -= 1
    running, per_segment = 0, []
    for k in range(len(points) - 1):
        running += share[k]
        per_segment.append((points[k + 1] - points[k]) / running if running else 0.0)
    prefix = [0.0]
    for value in per_segment:
        prefix.append(prefix[-1] + value)
    ops: dict[str, dict[str, Any]] = {}
    for a, b, e in intervals:
        _op_entry(ops, e)["us"] += prefix[index[b]] - prefix[index[a]]
    return ops


def _jax_rows(ops: dict[str, dict[str, Any]], described: dict[str, str]) -> tuple[dict[str, dict[str, Any]], int]:
    """Group the ops by description (the unrolled copies of one op); returns the rows and how many ops were
    described from the HLO."""
    rows: dict[str, dict[str, Any]] = {}
    matched = 0
    for op, entry in ops.items():
        description = described.get(op)
        matched += description is not None
        key = description or op
        row = rows.setdefault(key, {"us": 0.0, "count": 0, "hlo_ops": [], "kernels": []})
        row["us"] += entry["us"]
        row["count"] += entry["count"]
        row["hlo_ops"].append(op)
        row["kernels"] = sorted(set(row["kernels"]) | entry["kernels"])[:4]
    for key, row in rows.items():
        row["hlo_ops"] = sorted(row["hlo_ops"], key=_natural)[:4] + (["..."] if len(row["hlo_ops"]) > 4 else [])
        if key in ops:  # undescribed: the raw name is the row's name already
            row.pop("hlo_ops")
    return rows, matched


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def profile_jax(variant: str, device: str, batch_size: int, steps: int, mnist: Any) -> dict[str, Any]:
    """Profile the JAX trainer's path on `device` (built as `runners.jax_round` builds it) over `steps` steps;
    run it inside `runners.precision` (JAX reads the matmul precision when it traces)."""
    import jax
    import numpy as np

    from benchmarks import runners
    from mnist_jax import data as jax_data
    from mnist_jax import tuned as jax_tuned
    from mnist_jax.profiling import capture

    dev = runners.jax_device(device)
    split = jax_data.from_torch(mnist.train)
    per_call = (min(jax_tuned.FUSED_STEPS, steps) if device == "cpu" else min(GPU_STEPS_PER_CALL, steps)) or 1
    if steps % per_call:
        raise ProfileError(
            f"--steps {steps} does not divide into JAX calls of {per_call} steps (the {variant} path's call); "
            f"expected a multiple of {per_call}; pass --steps {max(per_call, steps - steps % per_call)}"
        )
    idx = runners.round_batches(mnist, batch_size, steps * batch_size, False)
    state = jax.device_put(jax_tuned.create_state(0, runners.train_config(PRECISION)), dev)
    holder = {"state": state}
    if variant == "jax_scan_unrolled":
        images, labels = jax.device_put((split.images[idx], split.labels[idx]), dev)
        chunks = [(images[i : i + per_call], labels[i : i + per_call]) for i in range(0, steps, per_call)]
        compiled = jax_tuned.compile_train(jax_tuned.train_steps.lower(state, chunks[0], unroll=True), dev.platform)

        def run() -> None:
            s = holder["state"]
            for chunk in chunks:
                s, _ = compiled(s, chunk)
            holder["state"] = jax.block_until_ready(s)

        what = f"train_steps, {per_call} unrolled steps per call, compile_train({dev.platform!r})"
    else:
        resident = jax.device_put((split.images, split.labels), dev)
        orders = [jax.device_put(idx[i : i + per_call].astype(np.int32), dev) for i in range(0, steps, per_call)]
        compiled = jax_tuned.compile_train(jax_tuned.train_epoch_steps.lower(state, resident, orders[0]), dev.platform)

        def run() -> None:
            s = holder["state"]
            for order in orders:
                s, _ = compiled(s, resident, order)
            holder["state"] = jax.block_until_ready(s)

        what = f"train_epoch_steps, a rolled scan of {per_call} steps per call, compile_train({dev.platform!r})"
    text = compiled.as_text() or ""
    module = m[1] if (m := re.search(r"HloModule\s+([\w.\-]+)", text)) else None
    try:
        described = describe_hlo(text)
    except Exception as err:  # a description is a convenience: the raw names still make a table
        print(f"note: could not read the compiled HLO ({type(err).__name__}: {err}); raw names kept", file=sys.stderr)
        described = {}
    for _ in range(runners.WARMUP_ROUNDS):
        start = time.perf_counter()
        run()
        unprofiled = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="jax-profile-") as folder:
        with capture(Path(folder), device):  # the trainers' --profile capture: Perfetto's trace JSON beside the xplane
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
        events = _load_trace(Path(folder))
    ops, summary = trace_op_times(events, device, module)
    if not ops:
        raise ProfileError(
            f"the JAX trace of {variant} on {device} holds no op events (expected events naming an HLO op, "
            f"args.hlo_op, on {'the GPU streams' if device == 'cuda' else 'the XLA:CPU threads'}); threads seen: "
            + "; ".join(f"{t['process']}/{t['thread']}: {t['events']}" for t in summary[:6])
        )
    rows, matched = _jax_rows(ops, described)
    total_ms = sum(o["us"] for o in ops.values()) / 1000 / steps
    time_kind = (
        "GPU kernel time on the device streams"
        if device == "cuda"
        else "XLA:CPU op time, start to end event, each moment split among the ops running"
    )
    note = (
        f"{what}. Rows group the ops alike (an op's copies in unrolled steps among them): pass, layer, main ops, "
        f"output shape, from the compiled HLO ({matched} of {len(ops)} ops described)."
    )
    if device == "cuda" and total_ms > 1.1 * 1000 * wall / steps:
        note += (
            " The kernel time exceeds the wall time: kernels overlapped on several streams, or the trace held "
            "lines that repeat the kernels (see trace_threads in the JSON)."
        )
    return table(
        variant,
        rows,
        steps,
        wall,
        time_kind,
        note,
        {
            "framework": "jax",
            "unprofiled_wall_ms_per_step": 1000 * unprofiled / steps,
            "hlo_module": module,
            "steps_per_call": per_call,
            "trace_threads": summary,
        },
    )


# --- PyTorch ----------------------------------------------------------------------------------------------

#: Rows of torch.profiler's table that wrap the steps rather than do work in them.
_TORCH_WRAPPERS = ("ProfilerStep", "[memory]")


def profile_torch(variant: str, device: str, batch_size: int, steps: int, mnist: Any) -> dict[str, Any]:
    """Profile one PyTorch path (`runners.torch_round`: compiled or captured, warmed up) over `steps` steps; run it
    inside `runners.precision` and `runners.autotuned`, as the throughput suite does."""
    import torch

    from benchmarks import runners
    from mnist_torch.profiling import capture

    round_ = runners.torch_round(variant, "train", mnist, device, batch_size, steps * batch_size, PRECISION)
    with capture(None, device) as prof:  # the trainers' --profile capture, keeping no trace file
        start = time.perf_counter()
        round_.run()
        wall = time.perf_counter() - start
    rows: dict[str, dict[str, Any]] = {}
    for event in prof.key_averages():
        if event.key.startswith(_TORCH_WRAPPERS):
            continue
        if device == "cuda":
            us = getattr(event, "self_device_time_total", None)
            us = getattr(event, "self_cuda_time_total", 0.0) if us is None else us
        else:
            us = event.self_cpu_time_total
        if us > 0:
            rows[event.key] = {"us": float(us), "count": event.count}
    time_kind = "device (GPU) self time" if device == "cuda" else "CPU self time"
    note = {
        "torch_eager": "mnist_torch.steps.train_step, eager.",
        "torch_compile": "train_step with the forward pass through torch.compile (--mode compile). A "
        "'## Call CompiledFxGraph HASH ##' row is one of Inductor's compiled graphs (the forward's or the backward's), "
        "its fused kernels' time included; the aten ops beside it are the extern kernels the graphs call.",
        "torch_cudagraph": "the whole step captured as a CUDA graph (--mode cuda-graphs), replayed per step.",
    }[variant]
    extra = {"framework": "torch", "unprofiled_wall_ms_per_step": 1000 * round_.last_untimed_seconds / steps}
    if not rows:
        raise ProfileError(
            f"torch.profiler recorded no {time_kind} for {variant} on {device}; expected op rows from "
            f"key_averages(); check that the profiler works here (torch {torch.__version__})"
        )
    result = table(variant, rows, steps, wall, time_kind, note, extra)
    if variant == "torch_cudagraph" and (result["profiled_over_wall_pct"] or 0) < 10:
        result["note"] += (
            " The profiler saw little or no kernel time inside the graph replays (CUPTI did not trace the graph's "
            "kernels here): this table does not show where the replayed step's time goes."
        )
    return result


# --- output ------------------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    h = result["header"]
    device = h["device_name"] + (f" (host CPU: {h['cpu_name']})" if h["device"] == "cuda" else "")
    lines = [
        f"Profiled {h['date']} on {h['device']}: {device}, {h['cores']} cores, {h['threads']} threads for both "
        f"frameworks. torch {h['torch']}, jax {h['jax']} (jaxlib {h['jaxlib']}), flax {h['flax']}, Python "
        f"{h['python']}. Commit {h['commit']}. Batch {h['batch_size']}, {h['steps']} steps profiled per path, "
        f"precision {h['precision']}. Load average before: {', '.join(str(x) for x in h['loadavg_before'])}"
        f"{'; after: ' + ', '.join(str(x) for x in h['loadavg_after']) if 'loadavg_after' in h else ''}.",
        "",
        "Made by `python -m experiments.profile` (how to read it: its docstring). Shares are of the profiled total; "
        "wall is timed around the profiled steps, profiler overhead included.",
    ]
    if h.get("loaded"):
        lines += [
            "",
            f"**Measured under load**: the 1-minute load average passed the {h['cores']} cores (other processes "
            "ran), so the times are inflated and the shares distorted by contention; rerun on an idle machine.",
        ]
    for t in result["tables"]:
        cover = t["profiled_over_wall_pct"]
        lines += [
            "",
            f"### {t['path']}: {t['time']}",
            "",
            f"{t['note']} Wall per step {t['wall_ms_per_step']:.2f} ms profiled "
            f"({t['unprofiled_wall_ms_per_step']:.2f} ms unprofiled, the last warm-up round); the table covers "
            f"{t['total']['ms_per_step']:.2f} ms per step ({cover:.0f}% of the profiled wall)."
            if cover is not None
            else t["note"],
            "",
            "| kernel or fused op | ms per step | share % | per step |",
            "|---|---:|---:|---:|",
        ]
        for r in [*t["rows"], t["other"], t["total"]]:
            name = r["name"].replace("|", "\\|")
            if r.get("hlo_ops"):
                name = f"`{r['hlo_ops'][0]}`{' and copies' if len(r['hlo_ops']) > 1 else ''}: {name}"
            if r is t["total"] or r is t["other"]:
                name = f"*{name}*"
            lines.append(f"| {name} | {r['ms_per_step']:.3f} | {r['share_pct']:.1f} | {r['calls_per_step']:.1f} |")
    return "\n".join(lines) + "\n"


def write(stem: Path, result: dict[str, Any]) -> None:
    from mnist_common.files import write_atomically

    text = json.dumps(result, indent=1) + "\n"
    write_atomically(stem.with_name(stem.name + ".json"), lambda p: p.write_text(text))
    md = markdown(result)
    write_atomically(stem.with_name(stem.name + ".md"), lambda p: p.write_text(md))


# --- the command ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m experiments.profile", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True, help="path stem: writes STEM.json and STEM.md")
    parser.add_argument("--steps", type=int, default=None, help="steps profiled per path (default: 32 cpu, 256 cuda)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_STEPS} steps per path, to prove it works")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: expected a positive number of images per step, such as 128")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps {args.steps}: expected at least 1 step to profile, such as 32")
    return args


def run_profile(
    device: str, batch_size: int, steps: int, smoke: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Profile every path of `device`; the JSON-ready result. Threads: all available cores, for both frameworks
    (`conditions.set_threads`), set before JAX's backend starts."""
    threads = conditions.set_threads(None)
    from benchmarks import runners
    from mnist_torch import data as torch_data

    if device == "cuda" and not runners.gpu_present():
        raise ProfileError(
            "--device cuda: no CUDA GPU visible to both PyTorch and JAX; expected an NVIDIA GPU and "
            "`pip install -e .[dev,cuda]`; use --device cpu"
        )
    result: dict[str, Any] = {"header": header(device, batch_size, steps, threads), "tables": []}
    result["header"]["smoke"] = smoke
    result["header"]["settings"] = runners.SETTINGS[device]
    mnist = torch_data.load_mnist()
    for path in PATHS[device]:
        start = time.perf_counter()
        with runners.precision(PRECISION), runners.autotuned(device):
            if path.startswith("jax"):
                result["tables"].append(profile_jax(path, device, batch_size, steps, mnist))
            else:
                result["tables"].append(profile_torch(path, device, batch_size, steps, mnist))
        log(f"profiled {path} in {time.perf_counter() - start:.1f} s")
    result["header"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    load = max(result["header"]["loadavg_before"][0], result["header"]["loadavg_after"][0])
    result["header"]["loaded"] = load > (os.cpu_count() or 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    steps = args.steps or (SMOKE_STEPS if args.smoke else DEFAULT_STEPS[args.device])
    try:
        result = run_profile(args.device, args.batch_size, steps, args.smoke, log=lambda s: print(s, file=sys.stderr))
        write(args.out, result)
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The per-kernel profile experiment (`experiments/profile.py`): one smoke profile on the CPU, by command, gives a
table per path whose shares add up, with the CNN's convolutions in both frameworks' tables; --device cuda without a
GPU is one line and exit status 2; and the JAX trace's CPU timing splits overlapping ops without counting a moment
twice. No time is asserted. The trainers' own --profile is tests/test_trainer_profiler.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.conditions import REPO
from experiments import profile


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.profile", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def smoke_profile(tmp_path_factory) -> dict:
    stem = tmp_path_factory.mktemp("profile") / "smoke"
    done = run_command("--device", "cpu", "--batch-size", "32", "--smoke", "--out", str(stem))
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(f"{stem}.md").read_text().count("| *total (profiled)* |") == len(profile.PATHS["cpu"])
    return json.loads(Path(f"{stem}.json").read_text())


@pytest.mark.e2e
def test_smoke_profile_has_a_table_per_path_whose_shares_add_up(smoke_profile):
    header = smoke_profile["header"]
    assert header["device"] == "cpu" and header["precision"] == "float32" and header["steps"] == profile.SMOKE_STEPS
    assert header["commit"]  # a SHA, or 'unknown' without git
    tables = {t["path"]: t for t in smoke_profile["tables"]}
    assert set(tables) == set(profile.PATHS["cpu"])
    for path, t in tables.items():
        rows = [*t["rows"], t["other"]]
        assert 0 < len(t["rows"]) <= profile.TOP_ROWS, path
        assert all(0 <= r["share_pct"] <= 100 for r in rows), path
        assert sum(r["share_pct"] for r in rows) == pytest.approx(100, abs=0.01), path
        assert all(r["ms_per_step"] > 0 for r in t["rows"]), path
        assert t["total"]["ms_per_step"] > 0 and t["wall_ms_per_step"] > 0, path
        assert [r["ms_per_step"] for r in t["rows"]] == sorted((r["ms_per_step"] for r in t["rows"]), reverse=True)


@pytest.mark.e2e
def test_the_convolutions_show_up_in_both_frameworks(smoke_profile):
    tables = {t["path"]: t for t in smoke_profile["tables"]}
    jax_rows = tables["jax_scan_unrolled"]["rows"]
    assert any("convolution" in r["name"] or "conv" in " ".join(r.get("hlo_ops", [])) for r in jax_rows), jax_rows
    for path in ("torch_eager", "torch_compile"):
        names = [r["name"] for r in tables[path]["rows"]]
        assert any(n.startswith("aten::") and "convolution" in n for n in names), (path, names)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: --device cuda would profile it")
def test_cuda_without_a_gpu_is_one_line_and_exit_status_2(tmp_path, capsys, monkeypatch):
    """In-process (the command's main), to keep the test fast; the thread settings it makes are put back."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    threads = torch.get_num_threads()
    try:
        status = profile.main(["--device", "cuda", "--smoke", "--out", str(tmp_path / "cuda")])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda") and "Traceback" not in err, lines
    assert not list(tmp_path.iterdir())


def test_cpu_op_times_split_overlapping_ops_and_follow_async_end_events():
    """An asynchronous convolution whose event covers its launch only (0-1 us) and whose ``end:`` event comes at
    10 us, overlapping a 4-8 us fusion: the two split 4-8 us, and the total is the 10 us that some op ran."""
    meta = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}}]

    def op(name: str, ts: float, dur: float, tid: int = 1) -> dict:
        return {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": name, "args": {"hlo_op": name}}

    events = [
        *meta,
        op("convolution.1", 0, 1),
        op("fusion.2", 4, 4, tid=2),
        {"ph": "X", "pid": 1, "tid": 2, "ts": 9.5, "dur": 0.5, "name": "end: convolution.1"},
    ]
    ops, _ = profile.trace_op_times(events, "cpu", None)
    assert ops["convolution.1"]["us"] == pytest.approx(8.0)  # 0-4 and 8-10 alone, half of 4-8
    assert ops["fusion.2"]["us"] == pytest.approx(2.0)
    assert sum(o["us"] for o in ops.values()) == pytest.approx(10.0)


def test_hlo_descriptions_name_pass_layer_ops_and_shape():
    text = """HloModule jit__train_steps, entry_computation_layout={}

%fused_computation.1 (param_0: f32[128,14,14,64]) -> f32[128,14,14,64] {
  %param_0 = f32[128,14,14,64]{3,2,1,0} parameter(0)
  ROOT %add.1 = f32[128,14,14,64]{3,2,1,0} add(%param_0, %param_0), metadata={op_name="jit(f)/jvp(CNN)/conv2/add"}
}

ENTRY %main.2 (w: f32[3,3,32,64], x: f32[128,14,14,32]) -> f32[128,14,14,64] {
  %w = f32[3,3,32,64]{3,2,1,0} parameter(0)
  %x = f32[128,14,14,32]{3,2,1,0} parameter(1)
  %convolution.3 = f32[32,3,3,64]{3,2,1,0} convolution(%x, %x), window={size=14x14}
  %conv.4 = f32[128,14,14,64]{3,2,1,0} convolution(%x, %w), metadata={op_name="jit(f)/jvp(CNN)/conv2/conv"}
  ROOT %add_fusion.5 = f32[128,14,14,64]{3,2,1,0} fusion(%conv.4), kind=kLoop, calls=%fused_computation.1
}
"""
    described = profile.describe_hlo(text)
    assert described["conv.4"] == "forward conv2: convolution -> f32[128,14,14,64]"
    assert described["convolution.3"] == "backward: convolution (filter gradient) -> f32[32,3,3,64]"
    assert described["add_fusion.5"] == "forward conv2: add -> f32[128,14,14,64]"

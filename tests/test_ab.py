"""experiments/ab.py, the paired A/B of a few training-step variants: its command runs and writes what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.e2e  # the command in a subprocess, compiling two training steps
def test_ab_writes_every_round_and_the_paired_ratio(tmp_path):
    out = tmp_path / "ab.json"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.ab", "jax_jit", "jax_nnx_split", "--smoke", "--rounds", "5"]
        + ["--batch-size", "32", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_ENABLE_COMPILATION_CACHE": "false"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    baseline, other = result["rows"]
    assert [baseline["variant"], other["variant"]] == ["jax_jit", "jax_nnx_split"]
    assert all(len(row["round_seconds"]) == 5 and all(s > 0 for s in row["round_seconds"]) for row in result["rows"])
    ratio = other["speed_vs_jax_jit"]
    assert ratio["pairs"] == 5 and ratio["low"] <= ratio["ratio"] <= ratio["high"]
    assert result["cpu_name"] and result["commit"] and result["images_per_round"] == 64
    assert done.stdout.strip() == (
        f"jax_nnx_split vs jax_jit, batch 32, cpu: {ratio['ratio']:.3f}x [{ratio['low']:.3f}-{ratio['high']:.3f}] "
        "over 5 paired rounds"
    )


def test_ab_refuses_a_single_variant_in_one_line(capsys):
    from experiments import ab

    with pytest.raises(SystemExit) as exit_info:
        ab.main(["jax_jit", "--out", "x.json"])
    assert exit_info.value.code == 2
    assert "error: an A/B needs two variants or more and 5 rounds or more" in capsys.readouterr().err

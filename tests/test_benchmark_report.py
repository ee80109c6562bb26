"""benchmarks/report.py: intervals, paired ratios against PyTorch eager, verdicts, provenance, seeds, malformed
input."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmarks import report
from benchmarks.conditions import REPO

#: This checkout's commit, for the "clean tree" provenance line; None in a copy without git metadata (a device
#: machine's).
HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or None
ENV = {
    "device_name": "Test CPU, 2 cores",
    "torch": "2.14.1",
    "jax": "0.10.2",
    "jaxlib": "0.10.2",
    "flax": "0.12.8",
    "optax": "0.2.8",
    "python": "3.11.7",
    "commit": HEAD or "f" * 40,
    "dirty": False,
    "commit_source": "git",
    "threads": 2,
    "settings": "no autotuning on either side",
}


def comparison(rows, mode="train", device="cpu", batch_size=128, env=ENV):
    """One benchmark of the throughput suite: its variants' rows under one extra_info."""
    return {"mode": mode, "device": device, "batch_size": batch_size, "precision": "float32", "rows": rows, **env}


def variant(name, round_seconds, images=2048, loaded=False, compile_seconds=None):
    timed = [s for s in round_seconds if s is not None]
    rates = sorted(images / s for s in timed)
    return {
        "framework": name.split("_")[0],
        "variant": name,
        "mode": "train",
        "device": "cpu",
        "batch_size": 128,
        "precision": "float32",
        "compile_seconds": compile_seconds,
        "round_seconds": round_seconds,
        "rounds": len(timed),
        "images_per_s": rates[len(rates) // 2],
        "images_per_s_low": rates[0],
        "images_per_s_high": rates[-1],
        "other_processes_cores": 0.9 if loaded else 0.01,
        "loaded": loaded,
    }


def write(tmp_path, infos, name="results"):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"datetime": "2026-11-29T12:00:00", "benchmarks": [{"extra_info": i} for i in infos]}))
    return path


def test_paired_ratios_intervals_verdicts_and_not_run_rows(tmp_path, capsys):
    eager = [0.50, 0.52, 0.55, 0.60, 0.50, 0.51, 0.53, 0.58, 0.50, 0.52]
    jax = [s / 1.25 for s in eager]  # 1.25x eager in every pair, however the machine drifts
    compiled = [s / 1.5 for s in eager]
    rows = [
        variant("torch_eager", eager),
        variant("jax_scan_unrolled", jax, compile_seconds=1.5),
        variant("torch_compile", compiled, loaded=True, compile_seconds=6.0),
        {
            "framework": "torch",
            "variant": "torch_cudagraph",
            "mode": "train",
            "device": "cpu",
            "batch_size": 128,
            "precision": "float32",
            "not_run": "CUDA graphs exist on NVIDIA GPUs only",
        },
    ]
    report.main([str(write(tmp_path, [comparison(rows)])), "--out-dir", str(tmp_path / "out")])
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown == capsys.readouterr().out.rstrip("\n") + "\n"
    assert (
        "| train | jax_scan_unrolled | cpu | 128 | float32 | 4,923 [4,267-5,120] | 10 | 1.25x [1.25-1.25] |" in markdown
    )
    assert "| train | torch_eager | cpu | 128 | float32 | 3,938 [3,413-4,096] | 10 | 1.00x [1.00-1.00] |" in markdown
    assert (
        "| train | torch_cudagraph | cpu | 128 | float32 | not run: CUDA graphs exist on NVIDIA GPUs only |" in markdown
    )
    assert "**loaded** (0.90 cores used by others)" in markdown
    assert "jax_scan_unrolled >= 1x torch_compile: 0.83x [0.83-0.83], not met: the whole interval" in markdown
    assert "jax_scan_unrolled >= 1x torch_eager: 1.25x [1.25-1.25], met: the whole interval" in markdown
    if HEAD is not None:  # without git metadata the report cannot know the commit: the next test covers that line
        assert f"Provenance: commit {HEAD[:12]}, clean tree." in markdown
    assert "Settings, cpu: 2 threads for both frameworks; no autotuning on either side" in markdown
    assert "**Measured under load** (other processes took over a quarter of a core): torch_compile." in markdown
    assert (tmp_path / "out" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_two_headline_tables_compare_as_written_and_each_at_its_best():
    """As written: eager, the model through torch.compile, one jitted JAX step. At its best: PyTorch's fastest mode
    and the JAX trainer's path. JAX's column is judged, paired, against the PyTorch column beside it."""
    eager = [0.50, 0.52, 0.55, 0.60, 0.50, 0.51, 0.53, 0.58, 0.50, 0.52]
    rows = [
        variant("torch_eager", eager),
        variant("torch_compile", [s / 1.4 for s in eager]),
        variant("jax_jit", [s / 1.1 for s in eager]),
        variant("torch_compile_step", [s / 1.8 for s in eager]),
        variant("jax_scan_unrolled", [s / 1.5 for s in eager]),
    ]
    as_written, at_best = report.speed_headlines(rows, "cpu")
    assert as_written.startswith(
        "| training step, cpu, float32, as written | PyTorch eager | PyTorch, the model through `torch.compile` | "
        "JAX, one step through `jax.jit` |"
    )
    assert "| paired speed vs PyTorch eager, batch 128 | 1.00x [1.00-1.00] | 1.40x [1.40-1.40] | 1.10x" in as_written
    assert "| JAX's paired speed vs the PyTorch column beside it, batch 128 | | | 0.79x [0.79-0.79] |" in as_written
    assert "| PyTorch `--mode compile-step` | JAX as shipped |" in at_best
    assert "| JAX's paired speed vs the PyTorch column beside it, batch 128 | | | 0.83x [0.83-0.83] |" in at_best
    assert report.speed_headlines([r for r in rows if r["variant"] == "torch_eager"][:0], "cpu") == []


def test_dirty_foreign_and_unknown_provenance_are_shown_as_such(tmp_path, capsys):
    rows = [variant("torch_eager", [0.5] * 10)]
    for env, expected in [
        ({**ENV, "dirty": True}, "**DIRTY tree**"),
        ({**ENV, "commit": "0123456789abcdef0123456789abcdef01234567"}, "**foreign**: not in this repository"),
        ({k: v for k, v in ENV.items() if k not in ("commit", "dirty", "commit_source")}, "**provenance unknown**"),
    ]:
        report.main([str(write(tmp_path, [comparison(rows, env=env)]))])
        assert expected in capsys.readouterr().out


def legacy(name, images_per_s, batch_size=128):
    """A row as results recorded before paired rounds (the committed GPU files) hold it."""
    return {
        **{k: v for k, v in ENV.items() if k not in ("commit", "dirty", "commit_source")},
        "variant": name,
        "framework": name.split("_")[0],
        "mode": "train",
        "device": "cpu",
        "batch_size": batch_size,
        "precision": "float32",
        "images_per_s": images_per_s,
        "compile_seconds": None,
    }


def test_legacy_results_are_reported_unpaired_and_stages_merged(tmp_path):
    """benchmarks/gpu_run.sh writes one JSON per stage and reports them as one; old rows get no interval."""
    first = write(tmp_path, [legacy("torch_eager", 4000.0)], "stage0")
    second = write(tmp_path, [{**legacy("jax_epoch", 8000.0), "dry_run": True}], "stage1")
    report.main([str(first), str(second), "--out-dir", str(tmp_path / "out"), "--name", "h100"])
    merged = json.loads((tmp_path / "out" / "h100.json").read_text())
    assert [b["extra_info"]["variant"] for b in merged["benchmarks"]] == ["torch_eager", "jax_epoch"]
    markdown = (tmp_path / "out" / "h100.md").read_text()
    assert markdown.startswith("**DRY RUN**")
    assert (
        "| train | jax_epoch | cpu | 128 | float32 | 8,000 | n/a | 2.00x (unpaired) | 219.3 | none | not recorded |"
        in markdown
    )


def accuracy_row(name, setting="shipped"):
    runs = {
        "seeds_run": 3,
        "seeds_planned": 3,
        "reached_99": 2,
        "time_to_99": {"mean": 50.0, "std": 5.0, "min": 45.0, "max": 55.0, "n": 2},
        "first_epoch_at_99": {"mean": 3.0, "std": 0.0, "min": 3, "max": 3, "n": 2},
        "final_accuracy": {"mean": 0.9915, "std": None, "min": 0.9915, "max": 0.9915, "n": 1},
        "seconds_per_epoch": {"mean": 16.8, "std": 0.5, "min": 16.0, "max": 17.5, "n": 14},
        "compile_seconds": {"mean": 5.0, "std": 0.1, "min": 4.9, "max": 5.1, "n": 3},
    }
    return {
        "framework": name.split("_")[0],
        "variant": name,
        "mode": "accuracy",
        "device": "cpu",
        "precision": "float32",
        "setting": setting,
        "batch_size": 128,
        "runs": [],
        "original_accuracy": 0.9876,
        **runs,
    }


def test_accuracy_over_seeds(tmp_path, capsys):
    info = {"mode": "accuracy", "device": "cpu", "rows": [accuracy_row("jax"), accuracy_row("torch_eager")], **ENV}
    report.main([str(write(tmp_path, [info]))])
    markdown = capsys.readouterr().out
    assert (
        "| jax | cpu | float32 | shipped | 2/3 | 50.00 (45.00-55.00) | 3.0 (3.0-3.0) | 99.15% (n=1) "
        "| 16.800 (16.000-17.500) | 5.00 (4.90-5.10) | 98.76% |" in markdown
    )
    assert "the other seeds stop at their first epoch at >= 99%" in markdown
    # The README's headline, one column per trainer, eager first.
    assert "| 3 seeds each, cpu, float32, as shipped | PyTorch eager | JAX |" in markdown
    assert "| seeds reaching 99% within 10 epochs | 2/3 | 2/3 |" in markdown
    assert (
        "| time to 99%, s, over the seeds that reach it: mean (min-max) | 50.0 (45.0-55.0) | 50.0 (45.0-55.0) |"
        in markdown
    )
    # A run of the accuracy benchmark alone measured no training step: its headline has no row of "not run".
    assert "| training step, images/s at batch 128" not in markdown and "| compiling one training step" not in markdown


def every_seed_row(name, curves, walls):
    """An accuracy row as the benchmark now writes it: every seed trains every epoch (`summarize` of real runs)."""
    from benchmarks.test_accuracy import summarize

    runs = [
        {
            "seed": seed,
            "epochs_run": len(curve),
            "curve": curve,
            "epoch_seconds": [10.0] * len(curve),
            "epoch_wall_s": wall,
            "wall_s": wall[-1] + 2.0,
            "time_to_99_s": next((10.0 * (e + 1) for e, a in enumerate(curve) if a >= 0.99), None),
            "final_accuracy": curve[-1],
            "compile_seconds": None if name == "torch_eager" else 5.0,
        }
        for seed, (curve, wall) in enumerate(zip(curves, walls, strict=True))
    ]
    return {**accuracy_row(name), "seeds_planned": len(runs), "runs": runs, **summarize(runs)}


def test_time_to_accuracy_counts_every_seed_from_the_commands_start(tmp_path, capsys):
    # JAX: epoch 2's mean over the 3 seeds is 0.9910 with a t-interval lower end 0.9910 - 4.303 * 0.0010 / sqrt(3)
    # = 0.98852 (not cleared); epoch 3's 0.9930 +- 4.303 * 0.0010 / sqrt(3) clears 99%. A seed that never reaches
    # 99% alone (seed 2 of PyTorch) keeps PyTorch's mean below it: "not within 3 epochs", never a dropped seed.
    jax_curves = [[0.980, 0.990, 0.992], [0.981, 0.991, 0.993], [0.982, 0.992, 0.994]]
    walls = [[20.0, 30.0, 40.0], [21.0, 31.0, 41.0], [22.0, 32.0, 42.0]]
    torch_curves = [[0.985, 0.991, 0.995], [0.985, 0.991, 0.995], [0.950, 0.960, 0.970]]
    jax, torch = every_seed_row("jax", jax_curves, walls), every_seed_row("torch_eager", torch_curves, walls)
    assert jax["target_epoch"] == 3 and torch["target_epoch"] is None
    assert jax["epoch_accuracy"][1]["low"] == pytest.approx(0.9910 - 4.302653 * 0.0010 / 3**0.5)
    assert jax["wall_to_target_s"]["mean"] == pytest.approx(41.0) and jax["train_to_target_s"]["mean"] == 30.0
    assert torch["wall_to_target_s"] is None and torch["reached_99"] == 2
    info = {"mode": "accuracy", "device": "cpu", "rows": [jax, torch], **ENV}
    report.main([str(write(tmp_path, [info]))])
    markdown = capsys.readouterr().out
    assert (
        "| first epoch whose mean test accuracy over the seeds clears 99% (95% interval's lower end) "
        "| not within 3 epochs | 3 |" in markdown
    )
    assert "| time to it from the command's start, s: mean [95% interval] | n/a | 41.0 [38.5-43.5] |" in markdown
    assert "| training time alone to it, s: mean [95% interval] | n/a | 30.0 [30.0-30.0] |" in markdown  # no spread
    assert "time to 99%, s, over the seeds that reach it" not in markdown  # the old, seed-dropping row is gone
    assert "| jax | cpu | float32 | shipped | 3 | 98.10 [97.85-98.35] | 99.10 [98.85-99.35] |" in markdown
    assert "Every seed trains every epoch (the final accuracy is over all of them)." in markdown


def latency_row(name, p50_s):
    """A latency row with the fields the report reads, `p50_s` seconds a call."""
    return {
        "framework": name.split("_")[0],
        "variant": name,
        "mode": "latency",
        "device": "cpu",
        "batch_size": 1,
        "precision": "float32",
        "compile_seconds": None,
        "latency_p50_ms": 1000 * p50_s,
        "latency_p99_ms": 2000 * p50_s,
        "calls": 500,
        "images_per_s": 1 / p50_s,
    }


def test_latency_has_its_own_table_with_paired_blocks(tmp_path, capsys):
    def latency(name, p50_s):  # a measured row: its interval, rounds and, compiled, its compile seconds
        return {
            **latency_row(name, p50_s),
            "compile_seconds": None if name == "torch_eager" else 0.5,
            "latency_p50_low_ms": 900 * p50_s,
            "latency_p50_high_ms": 1100 * p50_s,
            "round_seconds": [p50_s] * 10,
        }

    info = {
        "mode": "latency",
        "device": "cpu",
        "rows": [latency("torch_eager", 0.004), latency("jax_jit", 0.001)],
        **ENV,
    }
    report.main([str(write(tmp_path, [info]))])
    markdown = capsys.readouterr().out
    assert "| jax_jit | cpu | 1.000 [0.900-1.100] | 2.000 | 500 | 4.00x [4.00-4.00] | 0.50 |" in markdown
    assert "| latency |" not in markdown  # not a throughput row


def test_gflops_against_the_measured_matmul_peak(tmp_path, capsys):
    peak = {
        **ENV,
        "framework": "torch",
        "variant": "sgemm",
        "mode": "peak",
        "device": "cpu",
        "batch_size": 2048,
        "precision": "float32",
        "compile_seconds": None,
        "gflops": 548.2,
        "gflops_low": 540.0,
        "gflops_high": 550.0,
    }
    path = write(tmp_path, [comparison([variant("torch_eager", [1.024] * 10)]), peak])
    report.main([str(path)])
    markdown = capsys.readouterr().out
    assert "| 54.8 (10%) |" in markdown  # 2000 images/s x 27.41 MFLOP = 54.82 GFLOP/s of 548.2
    assert "Matmul peak (one float32 torch.mm, measured in this run): cpu 548 [540-550] GFLOP/s." in markdown


MALFORMED = [
    ("{not json", "cannot read"),
    ("[1, 2]", "not pytest-benchmark's"),
    (json.dumps({"benchmarks": [{"extra_info": {}}]}), "holds no benchmark results"),
    (json.dumps({"benchmarks": [{"extra_info": {"variant": "jax_jit"}}]}), "lacks mode, device"),
    (
        json.dumps({"benchmarks": [{"extra_info": {"variant": "jax", "mode": "accuracy", "device": "cpu"}}]}),
        "cannot read (",
    ),
]


@pytest.mark.parametrize("content, expected", MALFORMED)
def test_malformed_input_is_refused_with_one_line_in_process(tmp_path, content, expected, capsys):
    """`report.main` ends with the one ``error:`` line Python prints (exit status 1), nothing else, no output file."""
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(path)])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    assert expected in message, message
    assert capsys.readouterr() == ("", "") and sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


@pytest.mark.e2e
@pytest.mark.parametrize("content, expected", MALFORMED)
def test_malformed_input_is_one_line(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    done = subprocess.run(
        [report.sys.executable, "-m", "benchmarks.report", str(path)], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and expected in done.stderr, done.stderr


def results_with(damage):
    """A results file of two benchmarks (two training variants, two latency variants), after ``damage(benchmarks)``."""
    eager = [0.50, 0.52, 0.55, 0.60, 0.50]
    benchmarks = [
        {
            "name": "test_throughput[cpu-train]",
            "extra_info": comparison([variant("torch_eager", eager), variant("jax_jit", [s / 2 for s in eager])]),
        },
        {
            "name": "test_latency[cpu]",
            "extra_info": {
                "mode": "latency",
                "device": "cpu",
                "rows": [latency_row("torch_eager", 0.004), latency_row("jax_jit", 0.001)],
                **ENV,
            },
        },
    ]
    damage(benchmarks)
    return json.dumps({"datetime": "2026-11-29T12:00:00", "benchmarks": benchmarks})


#: A damaged record, where the message names it, and what it says is wrong.
DAMAGED = {
    "a latency row without its figure": (
        lambda b: b[1]["extra_info"]["rows"][1].pop("latency_p50_ms"),
        'benchmark 1 "test_latency[cpu]" row 1 (jax_jit, latency, cpu)',
        "it has no latency_p50_ms",
    ),
    "a training row without images/s": (
        lambda b: b[0]["extra_info"]["rows"][0].pop("images_per_s"),
        'benchmark 0 "test_throughput[cpu-train]" row 0 (torch_eager, train, cpu)',
        "it has no images_per_s",
    ),
    "a figure that is not a number": (
        lambda b: b[0]["extra_info"]["rows"][1].update(images_per_s="fast"),
        'benchmark 0 "test_throughput[cpu-train]" row 1 (jax_jit, train, cpu)',
        'images_per_s is "fast", expected a number',
    ),
    "an extra_info that is not an object": (
        lambda b: b[1].update(extra_info="lost"),
        'benchmark 1 "test_latency[cpu]"',
        'extra_info is "lost", expected an object',
    ),
    "a row that is not an object": (
        lambda b: b[1]["extra_info"]["rows"].append(7),
        'benchmark 1 "test_latency[cpu]" row 2',
        "it is 7, expected an object",
    ),
    "an unknown mode": (
        lambda b: b[0]["extra_info"]["rows"][0].update(mode="trian"),
        'benchmark 0 "test_throughput[cpu-train]" row 0 (torch_eager, trian, cpu)',
        'mode "trian" is not one of train, eval, accuracy, latency',
    ),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_record_is_named_in_one_line_and_nothing_is_written(case, tmp_path, capsys):
    """A record the report cannot read is never left out without a word (with it, a whole table could vanish)."""
    damage, where, what = DAMAGED[case]
    path = tmp_path / "results.json"
    path.write_text(results_with(damage))
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(path)])
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message, message
    assert message.startswith(f"error: {path} holds a damaged record, {where}, which the report cannot read ("), message
    assert what in message, message
    assert message.endswith("expected one written by this project's benchmarks: run it again, or remove the record")
    assert capsys.readouterr() == ("", "") and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_the_undamaged_results_show_both_tables(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(results_with(lambda b: None))
    report.main([str(path)])
    markdown = capsys.readouterr().out
    assert "| train | jax_jit | cpu | 128 | float32 |" in markdown and "| jax_jit | cpu | 1.000 |" in markdown

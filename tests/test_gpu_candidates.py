"""experiments/gpu_candidates.py: its variants compute what the trainer computes, its HLO facts count, its command
line refuses bad input in one line, and (e2e) XLA parses its flags and its dry run goes end to end on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.conditions import REPO
from experiments import gpu_candidates as gc
from mnist_common.batches import batch_order
from mnist_jax import tuned as jax_tuned
from mnist_jax.model import CNN

#: |NCHW logits - CNN logits| bound, float32 on the CPU, logits of magnitude ~0.1: measured 0 (XLA:CPU computed the
#: same bits); the bound allows a few float32 roundings of a differently ordered sum, as another backend may do.
NCHW_LOGITS_ATOL = 1e-6
#: Per-step loss of each model or loss variant's epoch against the shipped epoch (~2.3), float32 on the CPU: measured
#: 0 for every variant on 4 steps of real images; the bound allows a few float32 roundings of a reordered sum.
LOSS_ATOL = 2e-6


@pytest.mark.e2e  # compiles GPU-candidate programs; the e2e dry run of gpu_candidates runs them too
def test_nchw_variant_gives_the_cnns_logits() -> None:
    variables = jax.jit(CNN().init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1), jnp.float32))
    images = jax.random.normal(jax.random.key(1), (16, 28, 28, 1), jnp.float32)
    expected = np.asarray(jax.jit(CNN().apply)(variables, images))
    got = np.asarray(jax.jit(gc.nchw_apply)(variables, images))
    assert np.abs(got - expected).max() <= NCHW_LOGITS_ATOL


@pytest.mark.e2e  # compiles four epoch programs
def test_each_model_and_loss_variant_trains_as_the_shipped_epoch(jax_mnist) -> None:
    """The worker's own path (make_state, epoch_function, compile_train, the trainer's batch order) for the shipped
    candidate and each variant of the model or loss, on 64 real images in batches of 16 (the CPU's rolled scan stays
    quick): the same per-step losses, and the HLO facts the report shows for them."""
    device = jax.devices("cpu")[0]
    data = jax.device_put((jax_mnist.train.images[:64], jax_mnist.train.labels[:64]), device)
    order = jax.device_put(batch_order(gc.SEED, 1, 64, 16).astype(np.int32), device)
    losses, facts = {}, {}
    for name in ("shipped", "conv1_matmul", "optax_loss", "nchw"):
        candidate = gc.CANDIDATES[name]
        state = jax.device_put(gc.make_state(candidate.model, device), device)
        epoch = gc.epoch_function(candidate.loss)
        compiled = jax_tuned.compile_train(epoch.lower(state, data, order), "cpu")
        _, metrics = compiled(state, data, order)
        losses[name] = np.asarray(metrics["loss"])
        facts[name] = gc.hlo_facts(compiled.as_text())
    assert losses["shipped"].shape == (4,) and np.all(np.isfinite(losses["shipped"]))
    for name in ("conv1_matmul", "optax_loss", "nchw"):
        np.testing.assert_allclose(losses[name], losses["shipped"], rtol=0, atol=LOSS_ATOL, err_msg=name)
    assert facts["optax_loss"]["scatter"] >= 1 and facts["shipped"]["scatter"] == 0, facts
    assert all(f["while"] >= 1 for f in facts.values()), facts


def test_hlo_facts_count_a_scatter_and_custom_calls() -> None:
    scatter = jax.jit(lambda x, i: jnp.zeros(8).at[i].add(x))
    text = scatter.lower(jnp.ones(3), jnp.array([1, 1, 5])).compile().as_text()
    facts = gc.hlo_facts(text)
    assert facts["scatter"] >= 1, text
    assert gc.hlo_facts(jax.jit(lambda x: x * 2).lower(jnp.ones(3)).compile().as_text())["scatter"] == 0
    # Custom calls exist on a GPU only: two lines as XLA:GPU prints them.
    gpu = (
        "%cudnn-conv-bias-activation.1 = (f32[128,28,28,32]{3,2,1,0}, u8[0]{0}) custom-call(%p0, %p1, %p2), "
        'window={size=3x3 pad=1_1x1_1}, custom_call_target="__cudnn$convBiasActivationForward"\n'
        '%custom-call.2 = (f32[128,10]{1,0}, s8[4194304]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm"\n'
        "%while.3 = (s32[], f32[3]) while(%tuple), condition=%cond, body=%body\n"
    )
    facts = gc.hlo_facts(gpu)
    assert facts["custom_calls"] == {"__cublas$gemm": 1, "__cudnn$convBiasActivationForward": 1}
    assert facts["while"] == 1 and facts["scatter"] == 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--candidates", "shipped,no_such"], "unknown candidate 'no_such'"),
        (["--dry-run", "--device", "cuda"], "--dry-run runs on the CPU"),
        (["--train-size", "5"], "--train-size takes"),
        (["--budget", "0"], "--budget takes"),
    ],
)
def test_bad_command_lines_are_one_line_and_exit_2(tmp_path: Path, capsys, argv: list[str], expected: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        gc.main([str(tmp_path / "out"), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


@pytest.mark.e2e  # a JAX process per case
@pytest.mark.parametrize(
    ("flag", "named"),
    [("--xla_gpu_no_such_flag=1", "xla_gpu_no_such_flag"), ("--xla_gpu_enable_command_buffer=NO_SUCH", "NO_SUCH")],
)
def test_a_flag_this_xla_does_not_know_reads_as_refused(flag: str, named: str) -> None:
    """XLA's own words for an unknown flag or value, from a real process, become the one line the table shows."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_gpu_deterministic_ops=true {flag}", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    line = gc.failure(done.returncode, done.stderr)
    assert line.startswith("refused by this XLA: ") and named in line and "\n" not in line, line


@pytest.mark.e2e  # a JAX process
def test_every_candidates_flags_parse_in_this_xla() -> None:
    """Each candidate's XLA_FLAGS (the autotune file's too) is accepted by this jaxlib's flag parser; the GPU's
    jaxlib may differ, which the orchestrator records as refused."""
    flags = {f for c in gc.CANDIDATES.values() for f in c.flags}
    flags |= {"--xla_gpu_dump_autotune_results_to=/tmp/a.textproto", "--xla_gpu_load_autotune_results_from=/tmp/a"}
    env = {**os.environ, "XLA_FLAGS": " ".join(sorted(flags)), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


#: Candidates whose workers run every code path a worker has: each cache mode, model, loss, the autotuning file, and
#: both kinds of determinism (the verdict's two sides). The others differ from these in their XLA flags alone, which
#: `test_every_candidates_flags_parse_in_this_xla` checks; each worker is a process of its own, so running the
#: dry run on these alone halves its time.
#: The first three decide the verdict (worker processes, two rounds each, in the dry run test); the others change the
#: model or the loss, which the in-process variants test compiles and trains as a worker does.
COVERING = ["shipped", "nondeterministic", "exclude_nondet_autotune_file", "conv1_matmul", "optax_loss", "nchw"]


def test_the_covering_candidates_cover_every_setting_but_the_flags() -> None:
    for field in ("cache", "model", "loss", "autotune_file", "deterministic"):
        every = {getattr(candidate, field) for candidate in gc.CANDIDATES.values()}
        assert {getattr(gc.CANDIDATES[name], field) for name in COVERING} == every, field


def dry_run(stem: Path, candidates: list[str], rounds: int) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.gpu_candidates",
            str(stem),
            "--dry-run",
            "--candidates",
            ",".join(candidates),
            "--rounds",
            str(rounds),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(Path(f"{stem}.json").read_text())
    assert list(report["candidates"]) == candidates
    for name, candidate in report["candidates"].items():
        ok = [r for r in candidate["runs"] if "epoch_s" in r]
        assert len(ok) == rounds, (name, candidate["runs"])
        for run in ok:
            assert run["epoch_s"] and all(s > 0 for s in run["epoch_s"]), (name, run)
            assert isinstance(run["params_sha256"], str) and len(run["params_sha256"]) == 64
    assert report["complete_rounds"] == rounds
    md = Path(f"{stem}.md").read_text()
    assert all(f"| {name} |" in md for name in candidates)
    return report


@pytest.mark.e2e
def test_dry_run_end_to_end(tmp_path: Path) -> None:
    """The orchestrator end to end on the baseline and a candidate the verdict can adopt (determinism and the
    autotuning file), two rounds each, so that byte-identity across rounds is computed; each a worker process of its
    own. `nondeterministic`'s worker runs in gpu_run.sh's dry run (.ci/run), the verdict's pairing against it in
    `test_the_verdict_is_the_fastest_byte_identical_candidate_that_asks_for_determinism`. What the model and loss
    variants add to a worker (make_state's model, epoch_function's loss) runs in-process, compiled as the worker
    compiles it, in `test_each_model_and_loss_variant_trains_as_the_shipped_epoch`."""
    report = dry_run(tmp_path / "determinism", ["shipped", "exclude_nondet_autotune_file"], rounds=2)
    assert report["summary"]["shipped"]["byte_identical"] is True
    assert "**Verdict:** adopt `" in (tmp_path / "determinism.md").read_text()


def _run(round_: int, seconds: list[float], sha: str, scatter: int = 0) -> dict:
    hlo = {
        "scatter": scatter,
        "while": 1,
        "sort": 0,
        "convolution": 0,
        "fusion": 9,
        "custom_calls": {"__cublas$gemm": 2},
    }
    return {
        "round": round_,
        "epoch_s": seconds,
        "first_call_s": seconds[0] + 1.0,
        "compile_s": 2.0,
        "cache_lookups": {"hits": int(round_ > 1), "misses": int(round_ == 1)},
        "params_sha256": sha,
        "hlo": hlo,
        "epoch_losses": [0.1],
    }


def test_the_verdict_is_the_fastest_byte_identical_candidate_that_asks_for_determinism() -> None:
    """Known round times and digests in, the table and the verdict out (no worker runs)."""
    runs = {
        "shipped": [_run(r, [0.20, 0.21, 0.20], "a") for r in (1, 2, 3)],
        "nondeterministic": [_run(r, [0.10, 0.10, 0.11], "b" * r) for r in (1, 2, 3)],
        "exclude_nondet_cached": [_run(r, [0.105, 0.104, 0.106], "c") for r in (1, 2, 3)],
        "nondet_autotune0": [_run(r, [0.09, 0.09, 0.09], "d") for r in (1, 2, 3)],  # identical by luck
        "command_buffer_while": [{"round": 1, "error": "refused by this XLA: Illegal value for --xla_gpu_enable"}],
    }
    summary = gc.summarize(runs, 3)
    assert summary["shipped"]["byte_identical"] is True and summary["nondeterministic"]["byte_identical"] is False
    assert summary["exclude_nondet_cached"]["vs_shipped"]["ratio"] == pytest.approx(0.20 / 0.105, rel=0.05)
    assert summary["exclude_nondet_cached"]["vs_shipped"]["pairs"] == 9
    verdict = gc.verdict(summary, runs, 3)
    assert verdict["candidate"] == "exclude_nondet_cached"
    assert 0.91 < verdict["vs_nondeterministic"]["ratio"] < 1.0
    assert "met: the whole interval" in verdict["line"] and "nondet_autotune0" in verdict["line"]
    report = {
        "settings": {"device": "cuda", "budget_s": 240.0, "rounds": 3, "train_size": 60000, "epochs": 3},
        "started": "now",
        "environment": {"device": "gpu: NVIDIA H200", "versions": {"jax": "0.11.2"}},
        "complete_rounds": 3,
        "stopped": None,
        "elapsed_s": 200.0,
        "summary": summary,
        "verdict": verdict,
    }
    md = gc.markdown(report)
    assert "| command_buffer_while |" in md and "refused by this XLA: Illegal value" in md
    assert "**Verdict:** adopt `exclude_nondet_cached`" in md
    assert "2.00 / 2.00 (cache) / 2.00 (cache)" in md

"""The processes of one data-parallel run agree before they train, and stop together.

Real processes on the CPU, as in tests/test_data_parallel.py: two JAX processes joined by
`jax.distributed` started with different flags, or with the same --process-id, must each stop with one
line and no traceback; a SIGINT to one of two training JAX processes stops it with one line and status
130, and the other with its "lost another process" line. PyTorch's check runs in two real gloo processes
(torchrun gives every worker the same argv, so its workers are started here directly, with different configs).
Those are marked e2e (`pytest -m e2e`); the rule they apply (`run_settings`, `first_difference`) is tested
in-process in the default run.

The bounds are generous: on the 2-core CI machine, shared with other jobs, importing the trainer alone
has taken 20 s. What must be quick is measured from the moment that matters (a signal sent, a peer
joined), not from the start.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_common.cli import parse_config
from mnist_common.config import DistributedError, TrainConfig
from mnist_common.parallel import PER_PROCESS_FIELDS, first_difference, run_settings
from tests.test_data_parallel import assert_stopped_in_one_line, free_port

#: One tiny epoch: the runs that must stop before training never reach it anyway.
FLAGS = ["--epochs", "1", "--train-size", "256", "--batch-size", "128", "--quiet", "--dist-timeout", "60"]
#: Seconds within which a process must have stopped, from its start (imports included: up to ~30 s under load).
START_BOUND = 120
#: Seconds within which a process must have stopped once the event that stops it has happened.
STOP_BOUND = 10


def jax_process(
    out_dir: Path, coordinator: str, process_id: int, *extra: str, flags: list[str] = FLAGS
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_jax.train",
            *flags,
            "--out-dir",
            str(out_dir),
            "--num-processes",
            "2",
            "--process-id",
            str(process_id),
            "--coordinator",
            coordinator,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_settings_leave_out_the_per_process_fields_alone():
    config = parse_config(
        "jax", ["--num-processes", "2", "--process-id", "1", "--coordinator", "localhost:1", "--out-dir", "x"]
    )
    settings = run_settings(config)
    assert set(settings) == {f.name for f in dataclasses.fields(TrainConfig)} - PER_PROCESS_FIELDS
    assert {
        "lr",
        "momentum",
        "seed",
        "batch_size",
        "epochs",
        "precision",
        "train_size",
        "mode",
        "api",
        "devices",
        "num_processes",
        "resume",
        "stop_at_accuracy",
        "nondeterministic",
        "device",
    } <= set(settings)
    other = run_settings(dataclasses.replace(config, process_id=0, out_dir=Path("y"), quiet=True, dist_timeout=5))
    assert first_difference([other, settings], "process", "same flags") is None
    assert (
        first_difference([settings, run_settings(dataclasses.replace(config, resume=True))], "process", "same flags")
        == "process 1 was started with --resume, process 0 with no --resume; same flags"
    )


@pytest.mark.e2e
def test_jax_processes_with_different_flags_stop_in_one_line(tmp_path):
    coordinator = f"localhost:{free_port()}"
    start = time.monotonic()
    processes = [
        jax_process(tmp_path, coordinator, 0, "--lr", "0.1"),
        jax_process(tmp_path, coordinator, 1, "--lr", "0.05"),
    ]
    outputs = [p.communicate(timeout=START_BOUND) for p in processes]
    print(f"both stopped after {time.monotonic() - start:.1f} s (imports included)")
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        assert p.returncode == 1, stderr[-3000:]
        assert_stopped_in_one_line(
            stderr,
            "error: process 1 was started with --lr 0.05, process 0 with --lr 0.1; "
            "start every process of a run with the same flags",
        )
        print(stderr.strip().splitlines()[-1])
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written: the check comes first


@pytest.mark.e2e
def test_a_second_jax_process_0_stops_in_one_line_at_once(tmp_path):
    """Two processes started with --process-id 0: the second stops at once; the first, still waiting for a
    process 1, stops with its own one line on SIGINT."""
    coordinator = f"localhost:{free_port()}"
    first = jax_process(tmp_path, coordinator, 0)
    second = jax_process(tmp_path, coordinator, 0)
    start = time.monotonic()
    while first.poll() is None and second.poll() is None:
        assert time.monotonic() - start < START_BOUND, "neither process 0 stopped"
        time.sleep(0.05)
    stopped, waiting = (first, second) if first.poll() is not None else (second, first)
    _, stderr = stopped.communicate()
    print(f"the second process 0 stopped after {time.monotonic() - start:.1f} s (imports included): {stderr.strip()}")
    assert stopped.returncode == 1
    assert_stopped_in_one_line(
        stderr, f"error: process 0 of 2: another process 0 already coordinates a run at --coordinator {coordinator}"
    )
    time.sleep(1)
    assert waiting.poll() is None  # the first still waits for a process 1
    waiting.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = waiting.communicate(timeout=STOP_BOUND)
    print(f"the first stopped {time.monotonic() - sent:.1f} s after SIGINT: {stderr.strip()}")
    assert waiting.returncode == 130
    assert_stopped_in_one_line(stderr, "error: process 0 of 2 was interrupted (SIGINT)")


@pytest.mark.e2e
def test_sigint_to_one_jax_process_stops_both(tmp_path):
    """SIGINT to process 1 during the epoch: it leaves at once (status 130, one line) without waiting at
    jax.distributed's shutdown barrier; process 0 loses it in its next collective and says so."""
    coordinator = f"localhost:{free_port()}"
    flags = ["--epochs", "2", "--train-size", "6400", "--batch-size", "128", "--dist-timeout", "60"]
    processes = [jax_process(tmp_path, coordinator, i, flags=flags) for i in range(2)]
    start = time.monotonic()
    line = ""
    while not line.startswith("compiled train and eval steps"):  # process 0 says so once; training starts next
        line = processes[0].stdout.readline()
        assert line or processes[0].poll() is None, processes[0].stderr.read()[-3000:]
        assert time.monotonic() - start < START_BOUND
    time.sleep(1)
    assert all(p.poll() is None for p in processes), "a process ended before the interrupt"
    processes[1].send_signal(signal.SIGINT)
    sent = time.monotonic()
    outputs = [p.communicate(timeout=STOP_BOUND + 20) for p in processes]
    seconds = time.monotonic() - sent
    print(f"both stopped {seconds:.1f} s after SIGINT")
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        print(p.returncode, stderr.strip().splitlines()[-1] if stderr.strip() else "")
    assert processes[1].returncode == 130
    assert_stopped_in_one_line(outputs[1][1], "error: process 1 of 2 was interrupted (SIGINT)")
    assert processes[0].returncode == 1
    assert_stopped_in_one_line(outputs[0][1], "error: process 0 of 2 lost another process of the run")
    assert seconds < STOP_BOUND


def _torch_rank(rank: int, port: int, lrs: list[float], results: dict) -> None:
    """One rank of a 2-rank gloo run that only compares its flags (`check_same_flags`)."""
    import torch.distributed as dist

    from mnist_torch.parallel import World, check_same_flags

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        check_same_flags(TrainConfig(lr=lrs[rank], mode="eager"), World(rank, 2))
        results[rank] = None
    except DistributedError as err:
        results[rank] = str(err)
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.e2e
def test_torch_ranks_with_different_flags_stop_in_one_line():
    """Ranks that agree pass the check: every torchrun run of tests/test_data_parallel.py goes through it."""
    lrs = [0.1, 0.05]
    import torch.multiprocessing as mp

    with mp.get_context("spawn").Manager() as manager:  # not forked from this multithreaded process (JAX)
        results = manager.dict()
        port = free_port()
        context = mp.spawn(_torch_rank, args=(port, lrs, results), nprocs=2, join=False)
        start = time.monotonic()
        while not context.join(timeout=1):
            assert time.monotonic() - start < START_BOUND
        said = [results[0], results[1]]
    expected = (
        "rank 1 was started with --lr 0.05, rank 0 with --lr 0.1; start the torchrun of every node with the same flags"
    )
    assert said == [expected, expected]
    print(expected)


@pytest.mark.e2e
def test_sigint_under_torchrun_stops_every_rank_in_one_line(tmp_path):
    """torchrun passes a SIGINT on to its workers (as a Ctrl-C in a terminal sends it to all of them); each
    prints one line and exits 130. torchrun itself then ends with status 1 and prints its own warnings and
    the traceback of its SignalException: the launcher's, not the trainer's."""
    flags = ["--epochs", "2", "--train-size", "6400", "--batch-size", "128", "--dist-timeout", "60"]
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "mnist_torch.train",
            *flags,
            "--out-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    while not (tmp_path / ".lock").exists():  # rank 0 has joined the run and passed the flags' check
        assert launcher.poll() is None, launcher.stderr.read()[-3000:]
        assert time.monotonic() - start < START_BOUND
        time.sleep(0.1)
    time.sleep(3)
    launcher.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = launcher.communicate(timeout=STOP_BOUND + 20)
    seconds = time.monotonic() - sent
    print(f"torchrun stopped {seconds:.1f} s after SIGINT, status {launcher.returncode}")
    said = [line for line in stderr.splitlines() if line.startswith("error: rank ")]
    print("\n".join(said))
    assert sorted(line.split(" was ")[0] for line in said) == ["error: rank 0 of 2", "error: rank 1 of 2"], stderr[
        -3000:
    ]
    assert all("was interrupted (SIGINT)" in line for line in said)
    assert not (tmp_path / ".lock").exists(), "rank 0 left its .lock behind"  # os._exit skips the lock's clean-up
    assert stderr.count("Traceback") <= 1 and "mnist_torch" not in stderr.partition("Traceback")[2], stderr[-3000:]
    assert launcher.returncode != 0 and seconds < STOP_BOUND

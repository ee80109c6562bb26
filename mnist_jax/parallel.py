"""Data parallelism with JAX's own machinery: a `jax.sharding.Mesh` over the devices of one or more processes.

Read it side by side with `mnist_torch/parallel.py`. Here the whole of data parallelism is where the
arrays live: every global batch is placed sharded along the mesh's one axis, "data", the parameters and
optimizer state replicated, and the training step is the very jitted function of a one-device run.
XLA's SPMD partitioner sees a mean over a sharded batch and inserts the all-reduce of the gradients
itself; nothing here sums a gradient. Several processes (``--num-processes``) first join through
`jax.distributed.initialize`; `jax.devices()` then lists every process's devices, the same mesh spans
them, and each process computes on its own. On the CPU their collectives go through gloo.

The global batch and its order are those of the one-device run (`mnist_common.batches.batch_order`), so a
run on N devices takes the same SGD steps, apart from the order in which float32 sums are added.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import jax
import numpy as np
from jax._src import distributed as jax_distributed
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnist_common import interrupts
from mnist_common.config import DeviceUnavailable, DistributedError, TrainConfig
from mnist_common.files import first_line
from mnist_common.outdir import record_holder, try_lock
from mnist_common.parallel import (
    LOST_PEER_SIGNS,
    exit_on_interrupt,
    first_difference,
    run_settings,
)

#: The mesh's one axis: the batch is split along it.
DATA_AXIS = "data"


def start_processes(config: TrainConfig) -> None:
    """Join the other processes of a ``--num-processes`` run (nothing to do for one process).

    Called before JAX starts a backend. Process 0 runs the coordinator at ``--coordinator``; every
    process waits at most ``--dist-timeout`` seconds for the others to arrive, and the same bounds the
    coordination service's heartbeats and the shutdown barrier, so a process whose peer vanished stops
    instead of hanging. CPU collectives go through gloo (a GPU uses NCCL regardless).

    jax.distributed ends a process whose start-up timed out with a fatal log and a stack trace, not an
    exception, so the other processes first wait for the coordinator to listen (`wait_for_coordinator`)
    and say in one line when it never does, or when another program holds its port. Process 0, waiting
    for processes that never start, gets JAX's own fatal error after --dist-timeout; it says first what
    it waits for. Once joined, the processes compare their flags (`check_same_flags`), before anything
    is written or computed.
    """
    if config.num_processes == 1:
        return
    # From here on SIGINT, SIGTERM and the other ending signals stop this process at once, with one line, and
    # skip jax.distributed's shutdown barrier (which the other processes would never reach); they then lose this one.
    exit_on_interrupt(lambda signum: interrupted(config, signum), interrupts.SIGNALS)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if config.process_id != 0:
        wait_for_coordinator(config)
    else:
        hold_coordinator_port(config)  # a second process 0 stops here, at once
        if not config.quiet:
            print(
                f"process 0 of {config.num_processes}: waiting up to {config.dist_timeout} s at {config.coordinator} "
                f"for the other {config.num_processes - 1}",
                file=sys.stderr,
                flush=True,
            )
    try:
        jax.distributed.initialize(
            config.coordinator,
            config.num_processes,
            config.process_id,
            initialization_timeout=config.dist_timeout,
            heartbeat_timeout_seconds=config.dist_timeout,
            shutdown_timeout_seconds=config.dist_timeout,
        )
    except Exception as err:  # XLA's error types differ between versions; its first line says what happened
        raise DistributedError(
            f"process {config.process_id} of {config.num_processes} could not join the run at --coordinator "
            f"{config.coordinator} within --dist-timeout {config.dist_timeout} s ({first_line(err)}); start all "
            f"{config.num_processes} processes with the same --coordinator and --num-processes, process 0 on that host"
        ) from None
    check_same_flags(config)


def hold_coordinator_port(config: TrainConfig) -> None:
    """Process 0 only: hold, for the life of this process, a lock named after --coordinator's port on this
    host, and refuse to start in one line when another process 0 holds it already.

    Two processes started with --process-id 0 would both start a coordination service, and gRPC lets both
    listen on the one port (SO_REUSEPORT): the other processes' connections are then dealt between them,
    and each ends, after up to --dist-timeout, in a fatal error of jaxlib's with a C++ stack trace. The
    lock makes the second one stop at once instead; the kernel releases it when the first one ends, however."""
    port = config.coordinator.rsplit(":", 1)[1]
    path = Path(tempfile.gettempdir()) / f"mnist_jax-coordinator-{port}.lock"
    try:
        handle, holder = try_lock(path)  # kept open (and locked) until this process ends
    except OSError:  # another user's lock file, a read-only temp folder: no check, JAX's own behaviour
        return
    if handle is None:
        others = "the other with 1" if config.num_processes == 2 else f"the others with 1 to {config.num_processes - 1}"
        raise DistributedError(
            f"process 0 of {config.num_processes}: another process 0 already coordinates a run at --coordinator "
            f"{config.coordinator} on this host ({holder}); start one process with --process-id 0 and {others}, "
            "or stop that run"
        )
    record_holder(handle, f"pid {os.getpid()}")
    _held.append(handle)
    check_port_free(config)


#: What to do about another program on the coordinator's port, said by every process that finds it.
PORT_FIX = "choose a free port (the same --coordinator for every process), or stop that program"


def check_port_free(config: TrainConfig) -> None:
    """Process 0 only: refuse in one line a --coordinator port another program listens on. The coordination
    service would fail to bind it and end the process with a C++ abort (status 134) and a stack trace; a plain
    bind of the port, released at once, finds that first."""
    port = int(config.coordinator.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR, as gRPC sets it: a previous run's connections left in TIME_WAIT do not count, a listener does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                return  # no IPv6 here, say: the service's own bind decides, as without this check
            raise DistributedError(
                f"process 0 of {config.num_processes}: port {port} of --coordinator {config.coordinator} is taken by "
                f"another program on this host; {PORT_FIX}"
            ) from None


_held: list[Any] = []  # the lock file of `hold_coordinator_port`, open until this process ends


def interrupted(config: TrainConfig, signum: int) -> str:
    """The line a process of a several-process run prints when a signal (SIGINT, SIGTERM, ...) stops it
    (`exit_on_interrupt`)."""
    return (
        f"error: process {config.process_id} of {config.num_processes} "
        f"was interrupted ({signal.Signals(signum).name}); "
        f"the other processes stop when they lose it; the checkpoint of the last finished epoch in {config.out_dir} "
        f"is whole: start all {config.num_processes} processes again with --resume"
    )


def check_same_flags(config: TrainConfig) -> None:
    """Before any step, before anything is written: every process's `run_settings` gathered in every
    process; when they are not the same, every process stops naming the first difference
    (`leave_together`: one line each, status 1, process 0 last).

    The settings go through the key-value store of jax.distributed's coordination service (the client
    `jax.distributed.initialize` made, which JAX keeps in `jax._src.distributed.global_state`): each
    process publishes its own under its --process-id and reads everyone's. Not an all-gather on the
    devices (`multihost_utils.process_allgather`): that would compile a program before the trainer turns
    on the persistent compilation cache, which JAX would then ignore for the whole run."""
    if config.num_processes == 1:
        return
    client = jax_distributed.global_state.client
    client.key_value_set(f"mnist/flags/{config.process_id}", json.dumps(run_settings(config)))
    gathered = [
        json.loads(client.blocking_key_value_get(f"mnist/flags/{index}", 1000 * config.dist_timeout))
        for index in range(config.num_processes)
    ]
    difference = first_difference(gathered, "process", "start every process of a run with the same flags")
    if difference is not None:
        leave_together(client, config, f"error: {difference}")


#: Seconds process 0 waits, after the flags' check failed, for the others to have printed their line.
LEAVE_WAIT = 10


def leave_together(client: Any, config: TrainConfig, line: str) -> NoReturn:
    """Every process prints `line` and exits with status 1, process 0 last.

    Process 0 runs the coordination service: were it gone before another process had read the flags or
    printed its line, that process's jax.distributed client would end it with a fatal error and a C++
    stack trace instead. So each other process prints its line, then says so in the key-value store and
    leaves; process 0 waits for them (at most LEAVE_WAIT seconds), then leaves too. Like the trainer's
    `fail`, `os._exit` skips jax.distributed's shutdown barrier."""
    print(line, file=sys.stderr, flush=True)
    if config.process_id != 0:
        client.key_value_set(f"mnist/left/{config.process_id}", "1")
    else:
        with contextlib.suppress(Exception):  # a process that never says so is waited for LEAVE_WAIT s at most
            for index in range(1, config.num_processes):
                client.blocking_key_value_get(f"mnist/left/{index}", 1000 * LEAVE_WAIT)
        time.sleep(0.5)  # their os._exit, a few instructions after their key_value_set
    os._exit(1)


def wait_for_coordinator(config: TrainConfig) -> None:
    """Return once a gRPC server (`speaks_http2`) listens at --coordinator; after --dist-timeout seconds with
    nothing there, or at once when another program holds the port, a DistributedError."""
    host, port = config.coordinator.rsplit(":", 1)
    deadline = time.monotonic() + config.dist_timeout
    while True:
        try:
            connection = socket.create_connection((host.strip("[]"), int(port)), timeout=1)
        except OSError as err:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"process {config.process_id} of {config.num_processes} found no coordinator at --coordinator "
                    f"{config.coordinator} within --dist-timeout {config.dist_timeout} s ({err.strerror or err}); "
                    "start process 0 with the same --coordinator, on that host, or correct the address"
                ) from None
            time.sleep(0.25)
            continue
        with connection:
            if speaks_http2(connection):
                return
        raise DistributedError(
            f"process {config.process_id} of {config.num_processes}: port {port} of --coordinator "
            f"{config.coordinator} is held by another program, not a JAX coordinator (it does not answer as gRPC "
            f"does), so process 0 cannot listen there; {PORT_FIX}"
        )


#: Seconds a listener at --coordinator has to answer `speaks_http2`; JAX's coordinator answers in milliseconds.
PROBE_TIMEOUT = 5


def speaks_http2(connection: socket.socket) -> bool:
    """Whether the other end answers an HTTP/2 client preface with the SETTINGS frame every gRPC server (JAX's
    coordination service is one) sends first. Another program on the port would otherwise let
    jax.distributed.initialize wait --dist-timeout seconds, then end this process in a C++ abort (status 134)."""
    connection.settimeout(PROBE_TIMEOUT)
    reply = b""
    try:  # the preface, then an empty SETTINGS frame: 9 bytes of header, its type (4) the fourth
        connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        while len(reply) < 9 and (chunk := connection.recv(9 - len(reply))):
            reply += chunk
    except OSError:  # silent for PROBE_TIMEOUT seconds, or the connection reset
        return False
    return len(reply) == 9 and reply[3] == 0x04


def make_mesh(platform: str, devices_per_process: int) -> Mesh:
    """A one-axis mesh over the first `devices_per_process` devices of `platform` in every process, in
    process order: the same mesh, device for device, in every process."""
    by_process: dict[int, list[jax.Device]] = {}
    for device in jax.devices(platform):
        by_process.setdefault(device.process_index, []).append(device)
    visible = len(by_process[jax.process_index()])
    if devices_per_process > min(len(devices) for devices in by_process.values()):
        hint = (
            f"; on the CPU, JAX_NUM_CPU_DEVICES={devices_per_process} splits it into that many"
            if platform == "cpu"
            else ""
        )
        raise DeviceUnavailable(
            f"--devices {devices_per_process} was asked for, but JAX sees {visible} {platform} device"
            f"{'s' if visible != 1 else ''} in {'each' if len(by_process) > 1 else 'this'} process{hint}; "
            "lower --devices"
        )
    devices = [device for index in sorted(by_process) for device in by_process[index][:devices_per_process]]
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The whole array on every device: parameters, optimizer state, the resident data sets."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, stacked: bool = False) -> NamedSharding:
    """A batch split along its image axis: (B, ...) arrays, or (K, B, ...) with `stacked` (K steps' batches,
    or an epoch's (steps, B) batch order)."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS) if stacked else PartitionSpec(DATA_AXIS))


def place(tree: Any, sharding: NamedSharding) -> Any:
    """Host arrays (the same values in every process) onto the mesh: each device receives its part."""
    return jax.device_put(tree, sharding)


def replicate(state: Any, mesh: Mesh) -> Any:
    """The trainer's state on every device of the mesh."""
    return place(state, replicated(mesh))


def is_writer() -> bool:
    """Whether this process writes the run's files: process 0 alone, as in PyTorch's rank 0."""
    return jax.process_index() == 0


def describe(mesh: Mesh) -> dict[str, int]:
    """For metrics.json: how many processes and devices trained (the same keys as PyTorch's)."""
    return {"processes": jax.process_count(), "devices": int(mesh.size)}


def lost_process(err: Exception, config: TrainConfig) -> DistributedError | None:
    """What a collective's failure means in a several-process run, as one actionable line: another process
    of the run is gone (killed, crashed, or stopped on an error of its own). None for any other error."""
    if config.num_processes == 1 or not any(sign in str(err) for sign in LOST_PEER_SIGNS):
        return None
    return DistributedError(
        f"process {config.process_id} of {config.num_processes} lost another process of the run ({first_line(err)}); "
        f"the checkpoint of the last finished epoch in {config.out_dir} is whole: start all {config.num_processes} "
        "processes again with --resume"
    )


def describe_device(mesh: Mesh) -> str:
    """`cpu:0` for one device, `2 devices (cuda:0, cuda:1) in 1 process` for several."""
    devices = list(mesh.devices.flat)
    if len(devices) == 1:
        return str(devices[0])
    shown = ", ".join(map(str, devices[:4])) + (", ..." if len(devices) > 4 else "")
    processes = jax.process_count()
    return f"{len(devices)} devices ({shown}) in {processes} process{'es' if processes > 1 else ''}"


def fail(message: str, config: TrainConfig) -> NoReturn:
    """Stop the run with one line on stderr. A process of a several-process run leaves at once: the exit handler
    of jax.distributed would otherwise wait up to --dist-timeout at a shutdown barrier that a failed or lost
    process never reaches. Everything already saved is whole (every file is written atomically)."""
    if config.num_processes == 1:
        sys.exit(message)
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)

"""Train the Flax CNN: optax SGD with momentum on cross-entropy, jit-compiled, evaluated on the test set each epoch.

Usage: python -m mnist_jax.train [--epochs 10] [--batch-size 128] [--lr 0.1] [--momentum 0.9] [--resume] ...

Writes into --out-dir: metrics.json, a checkpoint after every epoch (`--resume` continues
from it), weights.safetensors, and the plots curves.png, confusion.png, misclassified.png.

Data parallel: ``--devices N`` trains on N devices of this process, and ``--num-processes`` joins several
processes through `jax.distributed` (`mnist_jax.parallel`); every global batch is split among the devices.

Read it side by side with `mnist_torch/train.py`: the same functions in the same order.
The framework differences: the training state is an immutable pytree that `train_step`
returns anew instead of mutating, randomness is an explicit key, the steps are
compiled ahead of time so that compilation is timed apart from training, and data
parallelism is a matter of where arrays are placed (the steps do not change).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, NoReturn, Sequence

if __name__ == "__main__":
    # Check the command line before the imports below load JAX and PyTorch (seconds, 1 GB): a bad flag or a
    # path that cannot work then fails at once, with argparse's usage and one error line (exit status 2).
    from mnist_common import interrupts
    from mnist_common.cli import check_command_line

    interrupts.install("python -m mnist_jax.train")  # Ctrl-C or SIGTERM from here on: one line, exit 130 / 143
    check_command_line("train", "jax", sys.argv[1:])

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from jax.sharding import Mesh

from mnist_common.checkpoint import CheckpointError, records_to_json
from mnist_jax.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from mnist_jax.compilation_cache import count_cache_lookups, describe_lookups, use_compilation_cache
from mnist_jax.data import DataError, Split, batch_order, load_mnist, num_batches
from mnist_jax.model import CNN
from mnist_jax.parallel import batch_sharded, describe, is_writer, lost_process, make_mesh, place, replicated, start_processes
from mnist_common.weights import WEIGHTS_FILE
from mnist_jax.weights import export_weights
from mnist_common import interrupts
from mnist_common.config import (
    EVAL_BATCH_SIZE,
    DeviceUnavailable,
    DistributedError,
    TrainConfig,
    parse_config,
    per_device_batch,
    stopped_at,
)
from mnist_common.divergence import Diverged, check_epoch, kept
from mnist_common.files import OutDirBusy, out_dir_lock, write_failure
from mnist_common.plots import write_plots
from mnist_common.progress import EpochProgress, progress_enabled
from mnist_common.report import EpochRecord, format_epoch, write_metrics

Batch = tuple[jax.Array, jax.Array]  # images (N, 28, 28, 1) float, labels (N,) int

#: SGD steps fused into one compiled call by the trainer. Unrolled (no XLA while loop), 16 steps
#: trained 1.3x faster than one call per step on a 2-core CPU (benchmarks, 2026-11-26: 3 864 vs
#: 2 993 img/s at batch 128) for ~2 s more compilation; more steps compile longer for little more speed.
FUSED_STEPS = 16

#: Chunks of FUSED_STEPS steps the CPU path lets JAX queue ahead of the one running. Two keep the device
#: busy; without a bound the whole epoch was queued, and a Ctrl-C then waited for all of it (46 s at
#: --train-size 25600 on 2 cores) before the process could exit.
IN_FLIGHT = 2

#: Compiler options of the training steps on the CPU. jaxlib 0.10's XLA:CPU hands convolutions, dots
#: and reductions to YNNPACK fusions by default; for this network's backward pass (conv1 has one input
#: channel) they ran a training step 1.6x slower than XLA's own Eigen kernels on 2 CPU cores, with the
#: same results (benchmarks/RESULTS.md). The empty list turns those fusions off. Inference keeps them:
#: there they were faster (eval 1.4x at batch 128). Given to the CPU backend alone (`compile_train`):
#: another backend, or an XLA that no longer knows the option, compiles without it.
CPU_TRAIN_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}

#: --precision's compute dtype of the training steps (the parameters stay float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bf16": jnp.bfloat16}
Metrics = dict[str, jax.Array]


def start_backends() -> None:
    """Start JAX's backends, as the commands' first use of JAX does (`train`, `resolve_device`): a JAX_PLATFORMS
    naming a platform this machine lacks (cuda without an NVIDIA GPU, tpu without libtpu, a misspelt name),
    or a backend plugin that fails to start, is `DeviceUnavailable` with one line, not JAX's traceback."""
    try:
        jax.default_backend()
    except (RuntimeError, AssertionError) as err:  # jaxlib 0.10 asserts when it skips every platform (cuda, no GPU)
        raise DeviceUnavailable(_backend_failure(err)) from None


def resolve_device(name: str) -> jax.Device:
    """This process's first device of the kind asked for (in a several-process run, its own, not process 0's);
    JAX's backends failing to start is `DeviceUnavailable` (`start_backends`)."""
    start_backends()
    if name == "auto":
        return jax.local_devices()[0]  # JAX's default backend: the GPU when one is usable
    if name == "cuda":
        try:
            return jax.local_devices(backend="gpu")[0]
        except RuntimeError:
            raise DeviceUnavailable(
                "--device cuda was asked for, but JAX sees no CUDA GPU (install with `pip install -e .[cuda]`); "
                "use --device cpu or auto"
            ) from None
    return jax.local_devices(backend="cpu")[0]


def _backend_failure(err: BaseException) -> str:
    """The error line for JAX's backends failing to start (`resolve_device`): what, why in JAX's words, and what to set."""
    reason = (str(err).strip().splitlines() or [""])[0].split(" (set JAX_PLATFORMS=")[0].split(" (you may need to")[0]
    platforms = jax.config.jax_platforms
    if platforms:
        reason = reason or ("no NVIDIA GPU is visible, so JAX skipped cuda" if "cuda" in platforms or "gpu" in platforms
                            else "JAX started none of them")
        return (f"JAX_PLATFORMS={platforms} asks for a platform JAX cannot start on this machine ({reason}); expected "
                f"platforms present here (cpu; cuda needs an NVIDIA GPU and `pip install -e .[cuda]`); unset "
                f"JAX_PLATFORMS to let JAX choose, or set JAX_PLATFORMS=cpu")
    return (f"JAX could not start its backends ({reason or type(err).__name__}); set JAX_PLATFORMS=cpu to skip a "
            f"failing accelerator plugin, or reinstall it")


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """optax.sgd is torch.optim.SGD: trace = momentum * trace + grad (the first trace is the grad
    itself, as in PyTorch), then params -= lr * trace. tests/test_parity.py checks both steps."""
    return optax.sgd(config.lr, momentum=config.momentum)


def create_state(seed: int, config: TrainConfig) -> TrainState:
    """Freshly initialized parameters (PyTorch's default distributions, drawn from `seed`'s key) and SGD state.

    The state is a pytree: params, optimizer state and step count, with the model's `apply` (in the
    training compute dtype) as static metadata. It carries no RNG key
    because nothing after initialization is random (no dropout); the batch order comes
    from the seed through `batch_indices`, shared with the PyTorch trainer.
    """
    variables = CNN().init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1), jnp.float32))
    model = CNN(dtype=COMPUTE_DTYPES[config.precision])
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=make_optimizer(config))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch: torch.nn.CrossEntropyLoss(), in at least float32 (bfloat16 logits are widened)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), labels).mean()


def check_labels(images: jax.Array, labels: jax.Array) -> None:
    """Trace-time check (shapes and dtypes are static), so a bad batch fails in Python, not in XLA."""
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integer class indices of shape ({images.shape[0]},) to match the images, "
            f"got shape {tuple(labels.shape)} {labels.dtype}; use mnist_jax.data.load_mnist()"
        )


def loss_and_grads(params: Any, batch: Batch, apply_fn: Callable = CNN().apply) -> tuple[jax.Array, Any]:
    """Mean cross-entropy of one batch and its gradient (float32, like the parameters); traced into the compiled steps below."""
    images, labels = batch
    check_labels(images, labels)
    return jax.value_and_grad(lambda p: cross_entropy(apply_fn({"params": p}, images), labels))(params)


def _train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    loss, grads = loss_and_grads(state.params, batch, state.apply_fn)
    return state.apply_gradients(grads=grads), {"loss": loss}


#: One SGD step: (state, batch) -> (new state, {"loss"}). The old state's buffers are donated:
#: XLA updates the parameters in place, and the caller must use only the returned state.
train_step = jax.jit(_train_step, donate_argnums=0)


def _train_steps(state: TrainState, batches: Batch, unroll: int | bool = 1) -> tuple[TrainState, Metrics]:
    return jax.lax.scan(_train_step, state, batches, unroll=unroll)


#: K SGD steps in one call: `lax.scan` over batches stacked on a leading axis, images (K, N, 28, 28, 1),
#: labels (K, N); returns the state after the K steps and the K losses. One dispatch instead of K.
#: `unroll=True` replaces XLA's while loop by K copies of the step: on XLA:CPU the backward convolutions
#: inside a while loop run 15-70x slower than the same convolutions outside one (benchmarks/RESULTS.md).
train_steps = jax.jit(_train_steps, donate_argnums=0, static_argnames="unroll")


def _train_epoch_steps(state: TrainState, data: Batch, order: jax.Array) -> tuple[TrainState, Metrics]:
    images, labels = data

    def step(state: TrainState, idx: jax.Array) -> tuple[TrainState, Metrics]:
        return _train_step(state, (images[idx], labels[idx]))

    return jax.lax.scan(step, state, order)


#: A whole epoch in one call, the fastest path on a GPU: a rolled `lax.scan` over the rows of `order`
#: (steps, batch), the epoch's batch order as one integer array, each batch gathered on the device
#: from the resident training set `data` (images (N, 28, 28, 1), labels (N,)); returns the state after
#: every step and the steps' losses. One dispatch and one small upload per epoch instead of one per
#: batch. Not for the CPU: there the rolled loop is the trap `train_steps` documents.
train_epoch_steps = jax.jit(_train_epoch_steps, donate_argnums=0)


def compile_train(lowered: jax.stages.Lowered, platform: str, options: dict[str, Any] | None = None) -> jax.stages.Compiled:
    """Compile a lowered training step for `platform` ("cpu", "gpu", ...) with that platform's options.

    `options` defaults to CPU_TRAIN_COMPILER_OPTIONS on the CPU and none elsewhere. They tune one XLA
    version's CPU backend; an XLA that does not know one of them must still train, so it compiles
    without them and says so on stderr, instead of failing the run.
    """
    if options is None:
        options = CPU_TRAIN_COMPILER_OPTIONS if platform == "cpu" else {}
    if not options:
        return lowered.compile()
    try:
        return lowered.compile(compiler_options=options)
    except Exception as err:  # XLA's error type differs between versions; the message names the option
        if not any(name in str(err) for name in options):
            raise
        print(f"note: this XLA ({platform}, jaxlib {version('jaxlib')}) does not accept the compiler options "
              f"{sorted(options)}; compiling the training steps without them", file=sys.stderr, flush=True)
        return lowered.compile()


@jax.jit
def eval_step(params: Any, batch: Batch) -> Metrics:
    """Summed loss and correct count of one batch, so that batches of any size add up exactly."""
    images, labels = batch
    check_labels(images, labels)
    logits = CNN().apply({"params": params}, images)
    return {
        "loss_sum": optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum(),
        "correct": (logits.argmax(axis=1) == labels).sum(),
    }


def evaluate(params: Any, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split."""
    sums = [eval_step(params, (split.images[i : i + EVAL_BATCH_SIZE], split.labels[i : i + EVAL_BATCH_SIZE]))
            for i in range(0, len(split.labels), EVAL_BATCH_SIZE)]
    totals = jax.tree.map(lambda *x: float(sum(x)), *sums)
    n = len(split.labels)
    return totals["loss_sum"] / n, totals["correct"] / n


@jax.jit
def predict_step(params: Any, images: jax.Array) -> jax.Array:
    """Class probabilities of one batch; compiled on first use, after training, so no epoch time includes it."""
    return jax.nn.softmax(CNN().apply({"params": params}, images), axis=-1)


def predict(params: Any, images: jax.Array) -> np.ndarray:
    """Class probabilities (N, 10) of normalized images (N, 28, 28, 1), as a NumPy array on the host."""
    probabilities = [predict_step(params, images[start : start + EVAL_BATCH_SIZE])
                     for start in range(0, len(images), EVAL_BATCH_SIZE)]
    return np.concatenate([np.asarray(p) for p in probabilities])


class Steps(NamedTuple):
    """The compiled training steps of one run: a whole epoch per call, or FUSED_STEPS at a time plus one
    at a time, or (several CPU devices) one at a time."""

    epoch: Callable | None = None
    fused: Callable | None = None
    single: Callable | None = None

    def describe(self) -> str:
        if self.epoch is not None:
            return "a whole epoch per call"
        return f"{FUSED_STEPS} unrolled steps per call" if self.fused is not None else "one step per call"


def fuse_steps(mesh: Mesh) -> bool:
    """Whether the CPU path fuses FUSED_STEPS steps per call: on one device only. Split over several, the
    unrolled 16 steps, each with its gradient all-reduce, ran 2.6x slower per step than one step per call
    (76 against 29 ms at batch 128 on 2 host devices of a 2-core Xeon, 2026-11-27), while one device
    gains 1.2x from fusing (33.8 against 41.2 ms)."""
    return mesh.size == 1


def epoch_per_call(device: jax.Device) -> bool:
    """Whether the trainer runs a whole epoch per compiled call: on a GPU (or any accelerator), where
    it is the fastest path, but not on the CPU, where the rolled loop is the trap `train_steps` documents."""
    return device.platform != "cpu"


def epoch_order(config: TrainConfig, epoch: int, num_examples: int) -> np.ndarray:
    """The epoch's batches in the shared order (`batch_order`), as one (steps, batch) int32 array."""
    return batch_order(config.seed, epoch, num_examples, config.batch_size).astype(np.int32)


def train_epoch(state: TrainState, train: Split, config: TrainConfig, epoch: int, steps: Steps, mesh: Mesh) -> tuple[TrainState, np.ndarray]:
    """One pass in the shared batch order; returns the new state and every step's loss, on the host, once the device has finished.

    With `steps.epoch` the whole epoch is one call on the resident training set `train`, and the order
    goes to the devices split along its batch axis: each device gathers its share of every batch.
    Otherwise `train` is in host memory, and the epoch's batches go FUSED_STEPS at a time, each chunk
    split among the devices, through the compiled `train_steps`, and the few left over through
    `train_step`: the same SGD steps in the same order, with one dispatch per chunk (on several CPU
    devices every step goes through `train_step`: `fuse_steps`). Losses stay on the device until the epoch
    ends: reading each one would make the host wait for every step instead of queueing the next. The
    progress bar (a terminal only) reads the latest loss every few steps, which lets the queue run
    ahead in between.
    """
    order = epoch_order(config, epoch, len(train.labels))
    with EpochProgress(len(order), epoch, config.epochs, config.batch_size, progress_enabled(config.quiet)) as progress:
        if steps.epoch is not None:
            state, metrics = steps.epoch(state, tuple(train), place(order, batch_sharded(mesh, stacked=True)))
            for k in range(len(order)):
                progress.step(lambda k=k: float(metrics["loss"][k]))
            return state, np.asarray(metrics["loss"])
        losses = []
        fused = len(order) - len(order) % FUSED_STEPS if steps.fused is not None else 0
        for start in range(0, fused, FUSED_STEPS):
            idx = order[start : start + FUSED_STEPS]
            state, metrics = steps.fused(state, place((train.images[idx], train.labels[idx]), batch_sharded(mesh, stacked=True)))
            losses.append(metrics["loss"])
            if len(losses) > IN_FLIGHT:  # queue at most IN_FLIGHT chunks: an interrupt then waits for those alone
                losses[-1 - IN_FLIGHT].block_until_ready()
            for k in range(FUSED_STEPS):
                progress.step(lambda chunk=metrics["loss"], k=k: float(chunk[k]))
        for idx in order[fused:]:
            state, metrics = steps.single(state, place((train.images[idx], train.labels[idx]), batch_sharded(mesh)))
            losses.append(metrics["loss"][None])
            progress.step(metrics["loss"].item)
    return state, np.asarray(jnp.concatenate(losses))


def params_finite(params: Any) -> bool:
    return bool(jax.tree.reduce(jnp.logical_and, jax.tree.map(lambda p: jnp.isfinite(p).all(), params)))


def compile_steps(
    state: TrainState, train: Split, test: Split, batch_size: int, device: jax.Device, mesh: Mesh
) -> tuple[Steps, float, dict[str, int]]:
    """Compile the train and eval steps for `device`'s platform and the arrays' places on `mesh` ahead of
    time (or load them from the persistent compilation cache); `train` as `train_epoch` takes it.

    Returns the compiled train steps, the seconds spent, and the cache's hits and misses among them.
    """
    start = time.perf_counter()
    with count_cache_lookups() as lookups:
        if epoch_per_call(device):
            order = place(np.zeros((num_batches(len(train.labels), batch_size), batch_size), np.int32), batch_sharded(mesh, stacked=True))
            steps = Steps(epoch=compile_train(train_epoch_steps.lower(state, tuple(train), order), device.platform))
        else:
            idx = np.arange(FUSED_STEPS * batch_size).reshape(FUSED_STEPS, batch_size) % len(train.labels)
            batch = place((train.images[:batch_size], train.labels[:batch_size]), batch_sharded(mesh))
            steps = Steps(single=compile_train(train_step.lower(state, batch), device.platform))
            if fuse_steps(mesh):
                chunk = place((train.images[idx], train.labels[idx]), batch_sharded(mesh, stacked=True))
                steps = steps._replace(fused=compile_train(train_steps.lower(state, chunk, unroll=True), device.platform))
        eval_step.lower(state.params, (test.images[:EVAL_BATCH_SIZE], test.labels[:EVAL_BATCH_SIZE])).compile()
    return steps, time.perf_counter() - start, lookups


class XlaFlagsError(DeviceUnavailable):
    """An XLA_FLAGS that XLA would refuse when its backend starts (with a fatal log line); the message names the token."""


def xla_flags_problem(value: str) -> str | None:
    """What in an XLA_FLAGS value XLA would refuse, or None. XLA reads a value that does not start with ``-``
    as the name of a file of flags, and takes any later word starting with ``-`` for a flag; one starting
    with a single ``-`` it refuses. (A ``--`` flag XLA does not know is left to XLA, which names it.)"""
    import shlex  # here: the one user of it

    try:
        words = shlex.split(value)
    except ValueError:  # an unclosed quote: XLA splits on its own terms
        words = value.split()
    if not words:
        return None
    if not words[0].startswith("-") and not os.path.isfile(value.strip()):
        return (f"XLA_FLAGS holds {words[0]!r}, which is neither an XLA flag nor a flag file that exists (XLA would "
                f"read the whole value as a file name); expected flags starting with --, such as "
                f"--xla_gpu_deterministic_ops=true; correct or unset XLA_FLAGS")
    if bad := next((w for w in words if w.startswith("-") and not w.startswith("--")), None):
        return (f"XLA_FLAGS holds {bad!r}, which XLA refuses: its flags start with two dashes; write "
                f"it as -{bad}, or correct or unset XLA_FLAGS")
    return None


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Make two runs with the same flags compute the same bits: XLA's deterministic GPU ops.

    XLA:CPU is deterministic already. XLA:GPU is not by default: autotuning picks kernels by timing
    them, and some kernels accumulate with atomics; measured on an H100, two identical 2-epoch runs
    ended 93.43% and 95.24% apart without this, byte-identical with it (README, "Reproducibility").
    XLA reads XLA_FLAGS when its backend starts, so this acts in a fresh process (the command line's
    case) and not in one that has used JAX already. An XLA_FLAGS that names the option wins and is
    left exactly as written. The previous XLA_FLAGS comes back afterwards.

    An XLA_FLAGS that XLA would refuse (`xla_flags_problem`) is `XlaFlagsError`, naming the user's token,
    whether or not the option would be added: appended to, it would fail in XLA with a misleading message.
    An XLA_FLAGS naming a file of flags (XLA's other form) is left as written, since nothing can be appended
    to a file name; a note on stderr says so unless the file names the option.

    `enabled=False` (--nondeterministic) leaves XLA_FLAGS alone: XLA's default, autotuning and atomics
    allowed, its fastest on a GPU; on the CPU nothing changes.
    """
    before = os.environ.get("XLA_FLAGS")
    if before is not None and (problem := xla_flags_problem(before)) is not None:
        raise XlaFlagsError(problem)
    flag_file = Path(before.strip()) if before and before.strip() and not before.strip().startswith("-") else None
    if enabled and flag_file is not None:
        try:
            named = "xla_gpu_deterministic_ops" in flag_file.read_text(errors="replace")
        except OSError:  # unreadable: XLA will say so when it starts
            named = False
        if not named:
            print(f"note: XLA_FLAGS names the flag file {flag_file}, to which nothing can be added: GPU runs are "
                  f"deterministic only if it sets --xla_gpu_deterministic_ops=true", file=sys.stderr, flush=True)
    elif enabled and "xla_gpu_deterministic_ops" not in (before or ""):
        os.environ["XLA_FLAGS"] = f"{before or ''} --xla_gpu_deterministic_ops=true".strip()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = before


def train(config: TrainConfig) -> list[EpochRecord]:
    with deterministic(not config.nondeterministic):
        start_processes(config)  # jax.distributed, before any backend starts; nothing for one process
        start_backends()  # JAX_PLATFORMS naming an absent platform: one line
        writer = is_writer()  # process 0 writes the run's files; every process computes every step
        with out_dir_lock(config.out_dir, "python -m mnist_jax.train") if writer else contextlib.nullcontext():
            return _train(config, writer)


def _train(config: TrainConfig, writer: bool) -> list[EpochRecord]:
    cache_dir = use_compilation_cache()
    device = resolve_device(config.device)
    mesh = make_mesh(device.platform, config.devices)
    per_device_batch(config.batch_size, mesh.size, f"{mesh.size} devices")
    if not writer:  # one progress bar and one report per run: process 0's
        config = dataclasses.replace(config, quiet=True)
    interrupts.now("while loading the MNIST data")
    data = load_mnist(config.data_dir)
    train_host = Split(data.train.images[: config.train_size], data.train.labels[: config.train_size])
    # An accelerator keeps the training set resident (each device gathers its share of every batch);
    # the CPU path gathers the batches in host memory and sends each device its part.
    train_split = Split(*place(tuple(train_host), replicated(mesh))) if epoch_per_call(device) else train_host
    test_split = Split(*place(tuple(data.test), replicated(mesh)))  # every device evaluates all of it
    with jax.default_device(device):
        state = place(create_state(config.seed, config), replicated(mesh))
    records: list[EpochRecord] = []
    if config.resume:
        state, records = load_checkpoint(config.out_dir, state, config)  # restored onto the same devices
        interrupts.kept(f"the checkpoint after epoch {len(records)} in {checkpoint_path(config.out_dir)}")
        if not config.quiet:
            print(f"resumed from {config.out_dir} after epoch {len(records)}", flush=True)
    interrupts.now("during compilation")
    steps, compile_seconds, lookups = compile_steps(state, train_split, test_split, config.batch_size, device, mesh)
    if not config.quiet:
        print(f"compiled train and eval steps ({steps.describe()}, {describe_mesh(mesh)}) in {compile_seconds:.2f}s "
              f"({describe_lookups(lookups, cache_dir)})", flush=True)
    images_per_epoch = num_batches(config.train_size, config.batch_size) * config.batch_size
    versions = {"jax": jax.__version__, "jaxlib": version("jaxlib"), "flax": flax.__version__, "optax": optax.__version__}
    compilation_cache = {"dir": None if cache_dir is None else str(cache_dir), **lookups}

    def metrics_file(diverged: dict[str, Any] | None = None, stopped: int | None = None) -> Path | None:
        return write_metrics("jax", config, records, str(device), versions, compile_seconds, compilation_cache,
                             diverged, parallel=describe(mesh), stopped_at_accuracy=stopped) if writer else None

    for epoch in range(len(records) + 1, config.epochs + 1):
        if stopped_at(config, [r.test_accuracy for r in records]) is not None:
            break  # --stop-at-accuracy reached, by this run or by the one it resumes: every process takes the same decision
        interrupts.now(f"during epoch {epoch}/{config.epochs}")
        start = time.perf_counter()
        state, losses = train_epoch(state, train_split, config, epoch, steps, mesh)
        seconds = time.perf_counter() - start
        try:
            check_epoch(epoch, losses, params_finite(state.params), config.lr, kept(config.out_dir, records[-1].epoch if records else None))
        except Diverged as err:  # nothing of this epoch is saved; metrics.json says where it stopped
            metrics_file(err.record())
            raise
        test_loss, test_accuracy = evaluate(state.params, test_split)
        records.append(EpochRecord(epoch, float(losses.mean()), test_loss, test_accuracy, seconds, images_per_epoch / seconds))
        if writer:
            interrupts.now("while writing the checkpoint")
            with interrupts.deferred():  # a checkpoint begun is finished; then the interrupt acts
                path = save_checkpoint(config.out_dir, state, records, config)
                interrupts.kept(f"the checkpoint after epoch {epoch} in {path}")
        if not config.quiet:
            print(format_epoch(records[-1], config.epochs), flush=True)
    stopped = stopped_at(config, [r.test_accuracy for r in records])
    interrupts.now("after the last epoch, while writing metrics.json, the weights and the plots")
    predictions = predict(state.params, test_split.images).argmax(axis=1)  # a computation on every process's devices

    if writer:
        path = metrics_file(stopped=stopped)
        export_weights(state.params, config.out_dir / WEIGHTS_FILE)
        plots = write_plots(config.out_dir, "jax", records_to_json(records), data.test.images, data.test.labels, predictions)
        written = ", ".join(p.name for p in plots)
        early = "" if stopped is None else f", stopped after epoch {stopped} of {config.epochs} at >= {100 * config.stop_at_accuracy:.2f}%"
        print(f"test accuracy {100 * records[-1].test_accuracy:.2f}% on {describe_mesh(mesh)}{early}; wrote {path}, {WEIGHTS_FILE}, checkpoint, {written}")
    return records


def describe_mesh(mesh: Mesh) -> str:
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


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config("jax", argv)
    try:
        with interrupts.catching():
            train(config)
    except interrupts.Interrupted as err:  # the out-dir's lock is released and no partial file is left
        interrupts.report(err, interrupts.resume_command("mnist_jax.train", sys.argv[1:] if argv is None else argv))
    except (DataError, DeviceUnavailable, DistributedError, CheckpointError, Diverged, OutDirBusy) as err:
        fail(f"error: {err}", config)
    except OSError as err:  # the out-dir's disk is full, read-only, or not a folder
        fail(f"error: {write_failure(err, config.out_dir)}", config)
    except Exception as err:
        if (lost := lost_process(err, config)) is None:
            raise
        fail(f"error: {lost}", config)


if __name__ == "__main__":
    main()

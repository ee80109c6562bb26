"""The forms that win the JAX trainer its speed, each tied to the lesson (`mnist_jax.model`, `mnist_jax.steps`).

Every form here is a row of the tuning ledger, and docs/design.md gives each name's measurement; tests/test_tuned.py
and tests/test_parity.py check each against the lesson: the same parameters in, the same logits and gradients out.
The trainer runs these; the lesson computes the same steps in the form a user writes first.
Mirrors `mnist_torch/tuned.py`: the names both define correspond, in the same order (tests/test_architecture.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mnist_common.batches import num_batches
from mnist_common.config import EVAL_BATCH_SIZE, TrainConfig
from mnist_jax import steps
from mnist_jax.data import MNISTData, Split
from mnist_jax.model import check_images, conv, dense, relu, torch_bias_init, torch_kernel_init
from mnist_jax.parallel import batch_sharded, place, replicated
from mnist_jax.steps import COMPUTE_DTYPES, Batch, Metrics, TrainState, eval_step, train_step


@jax.custom_vjp
def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """`nn.avg_pool(x, (2, 2), strides=(2, 2))` whose gradient, a padded reduce-window, was slow on the CPU: the
    windows do not overlap, so each output's cotangent spreads evenly over its window. Ledger: the pooling gradient."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _avg_pool_2x2_fwd(x: jax.Array) -> tuple[jax.Array, None]:
    return avg_pool_2x2(x), None


def _avg_pool_2x2_bwd(_: None, cotangent: jax.Array) -> tuple[jax.Array]:
    return (jnp.repeat(jnp.repeat(cotangent, 2, axis=1), 2, axis=2) / 4,)


avg_pool_2x2.defvjp(_avg_pool_2x2_fwd, _avg_pool_2x2_bwd)


def _patches(x: jax.Array) -> jax.Array:
    """The 3x3 neighbourhoods of a one-channel batch (N, H, W, 1), zero-padded, as rows of (N * H * W, 10): the nine
    taps in the kernel's (kh, kw) order, then a column of ones for the bias."""
    n, h, w, _ = x.shape
    padded = jnp.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    taps = [padded[:, dh : dh + h, dw : dw + w] for dh in range(3) for dw in range(3)]
    return jnp.stack([*taps, jnp.ones_like(taps[0])], axis=-1).reshape(n * h * w, 10)


@jax.custom_vjp
def conv1_as_matmul(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """conv1 ("SAME", one input channel) as one matmul, [patches | 1] x [kernel; bias], its kernel and bias
    gradients one more: XLA:CPU runs a one-channel convolution and its bias reduction poorly. Ledger: conv1."""
    return _conv1_as_matmul_fwd(x, kernel, bias)[0]


def _conv1_as_matmul_fwd(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> tuple[jax.Array, tuple]:
    patches = _patches(x)
    weights = jnp.concatenate([kernel.reshape(9, -1), bias[None]])
    return (patches @ weights).reshape(*x.shape[:3], -1), (x, patches, weights)


def _conv1_as_matmul_bwd(saved: tuple, cotangent: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x, patches, weights = saved
    rows = cotangent.reshape(patches.shape[0], -1)
    both = patches.T @ rows  # (10, features): the kernel's nine rows, then the bias's
    _, patches_vjp = jax.vjp(_patches, x)  # the input's gradient; XLA drops it when, as in training, nothing uses it
    (x_grad,) = patches_vjp((rows @ weights.T).at[:, 9].set(0))
    return x_grad, both[:9].reshape(3, 3, 1, -1), both[9]


conv1_as_matmul.defvjp(_conv1_as_matmul_fwd, _conv1_as_matmul_bwd)


class Conv1AsMatmul(nn.Module):
    """conv1's `nn.Conv` parameters (names, shapes, initializers), computed by `conv1_as_matmul`."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", torch_kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", torch_bias_init(x.shape[-1] * 3 * 3), (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv1_as_matmul(x, kernel, bias)


class TunedCNN(nn.Module):
    """`mnist_jax.model.CNN`, its parameters and maths, with the pooling gradient written out and, on the CPU,
    conv1 as one matmul."""

    dtype: Any = None
    conv1_as_matmul: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x)
        if self.conv1_as_matmul:
            x = Conv1AsMatmul(32, self.dtype, name="conv1")(x)
        else:
            x = conv(32, x.shape[-1], "conv1", self.dtype)(x)
        x = avg_pool_2x2(relu(x))
        x = avg_pool_2x2(relu(conv(64, x.shape[-1], "conv2", self.dtype)(x)))
        x = x.reshape((x.shape[0], -1))
        x = relu(dense(256, x.shape[-1], "fc1", self.dtype)(x))
        return dense(10, x.shape[-1], "fc2", self.dtype)(x)


def conv1_as_matmul_on(device: jax.Device | None = None) -> bool:
    """conv1 as one matmul on the CPU, where it trains faster; accelerators keep `nn.Conv`."""
    return (device or jax.local_devices()[0]).platform == "cpu"


def create_state(seed: int, config: TrainConfig, device: jax.Device | None = None) -> TrainState:
    """The lesson's state (`mnist_jax.steps.create_state`), its model's `apply` that of `TunedCNN` for `device`."""
    model = TunedCNN(dtype=COMPUTE_DTYPES[config.precision], conv1_as_matmul=conv1_as_matmul_on(device))
    return steps.create_state(seed, config, device).replace(apply_fn=model.apply)


#: Steps unrolled into one call on the CPU: one dispatch for many, for a few seconds more compilation.
#: Ledger: several steps per compiled call.
FUSED_STEPS = 16

_step = train_step.__wrapped__  # the lesson's step as a Python function, to trace inside the loops below


def _train_steps(state: TrainState, batches: Batch, unroll: int | bool = 1) -> tuple[TrainState, Metrics]:
    return jax.lax.scan(_step, state, batches, unroll=unroll)


#: K steps in one call over K batches stacked on a leading axis; the state after them and the K losses.
#: `unroll=True` on the CPU: XLA:CPU runs the backward convolutions inside a while loop many times slower.
train_steps = jax.jit(_train_steps, donate_argnums=0, static_argnames="unroll")


def _train_epoch_steps(state: TrainState, data: Batch, order: jax.Array) -> tuple[TrainState, Metrics]:
    images, labels = data
    return jax.lax.scan(lambda state, idx: _step(state, (images[idx], labels[idx])), state, order)


#: A whole epoch in one call, rolled, each batch gathered on the device from the resident training set: one dispatch
#: per epoch on an accelerator. Ledger: a whole epoch per call.
train_epoch_steps = jax.jit(_train_epoch_steps, donate_argnums=0)


#: XLA:CPU's YNNPACK fusions off for the training steps, which ran slower in them. Ledger: YNNPACK fusions off.
CPU_TRAIN_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compile_train(
    lowered: jax.stages.Lowered, platform: str, options: dict[str, Any] | None = None
) -> jax.stages.Compiled:
    """Compile a lowered training step with `platform`'s options (default: CPU_TRAIN_COMPILER_OPTIONS on the CPU);
    an XLA that no longer knows an option compiles without it, and says so, instead of failing the run."""
    if options is None:
        options = CPU_TRAIN_COMPILER_OPTIONS if platform == "cpu" else {}
    if not options:
        return lowered.compile()
    try:
        return lowered.compile(compiler_options=options)
    except Exception as err:  # XLA's error type differs between versions; the message names the option
        if not any(name in str(err) for name in options):
            raise
        print(
            f"note: this XLA ({platform}, jaxlib {version('jaxlib')}) does not accept the compiler options "
            f"{sorted(options)}; compiling the training steps without them",
            file=sys.stderr,
            flush=True,
        )
        return lowered.compile()


def epoch_per_call(device: jax.Device) -> bool:
    """A whole epoch per call on accelerators; the CPU fuses unrolled steps instead (`fuse_steps`)."""
    return device.platform != "cpu"


#: Calls the CPU path lets JAX queue ahead of the running one: two keep the device busy, and a Ctrl-C waits for
#: no more than them.
IN_FLIGHT = 2


def fuse_steps(mesh: Mesh) -> bool:
    """FUSED_STEPS per call on one device only: split over several, each fused step's all-reduce made it slower."""
    return mesh.size == 1


def place_splits(data: MNISTData, config: TrainConfig, mesh: Mesh, device: jax.Device) -> tuple[Split, Split, Split]:
    """The run's training split as `Steps` reads it, resident on the devices of an accelerator, in host memory on
    the CPU (each call gathers its batches there); the test split on the host and on every device."""
    train = Split(data.train.images[: config.train_size], data.train.labels[: config.train_size])
    test = Split(data.test.images[: config.test_size], data.test.labels[: config.test_size])
    resident = Split(*place(tuple(train), replicated(mesh))) if epoch_per_call(device) else train
    return resident, test, Split(*place(tuple(test), replicated(mesh)))


def _same(state: Any) -> Any:
    return state


class Steps(NamedTuple):
    """The compiled training steps of one run, as `mnist_jax.train.train_epoch` calls them, with the training set
    and the mesh they read: a whole epoch per call, or FUSED_STEPS at a time plus one at a time, or (several CPU
    devices) one at a time. `start` and `finish` turn the trainer's `TrainState` into the state the steps take
    and back, once per epoch (Linen's: the `TrainState` itself; Flax NNX's: `mnist_jax.steps_nnx`)."""

    train: Split
    mesh: Mesh
    single: Callable | None = None
    fused: Callable | None = None
    epoch: Callable | None = None
    name: str = "Linen"
    start: Callable[[TrainState], Any] = _same
    finish: Callable[[Any], TrainState] = _same

    def describe(self) -> str:
        calls = "one step per call" if self.fused is None else f"{FUSED_STEPS} unrolled steps per call"
        return f"{self.name}, {'a whole epoch per call' if self.epoch is not None else calls}"

    @property
    def device_type(self) -> str:
        return self.mesh.devices.flat[0].platform

    def calls(self, order: np.ndarray) -> list[np.ndarray]:
        """The epoch's (steps, batch) order cut into the rows of each call: all of them in one, or
        FUSED_STEPS per call and the few left over one per call, or one per call."""
        order = order.astype(np.int32, copy=False)
        if self.epoch is not None:
            return [order]
        fused = len(order) - len(order) % FUSED_STEPS if self.fused is not None else 0
        return [order[start : start + FUSED_STEPS] for start in range(0, fused, FUSED_STEPS)] + [
            order[start : start + 1] for start in range(fused, len(order))
        ]

    def __call__(self, state: TrainState, rows: np.ndarray) -> tuple[TrainState, jax.Array]:
        """Train on the batches `rows` (one of `calls`); returns the new state and their losses, still on the devices.
        The whole epoch gathers its batches on the devices; the other calls' batches are gathered in host memory."""
        train, mesh = self.train, self.mesh
        if self.epoch is not None:
            state, metrics = self.epoch(state, tuple(train), place(rows, batch_sharded(mesh, stacked=True)))
            return state, metrics["loss"]
        if len(rows) > 1:
            state, metrics = self.fused(
                state, place((train.images[rows], train.labels[rows]), batch_sharded(mesh, stacked=True))
            )
            return state, metrics["loss"]
        idx = rows[0]
        state, metrics = self.single(state, place((train.images[idx], train.labels[idx]), batch_sharded(mesh)))
        return state, metrics["loss"][None]

    def wait(self, loss: jax.Array) -> None:
        """Until the devices have computed `loss`."""
        loss.block_until_ready()

    def bound(self, losses: list[jax.Array]) -> None:
        """JAX queues calls without bound: wait for the one IN_FLIGHT calls ago, so that an interrupt waits for no
        more than IN_FLIGHT calls."""
        if len(losses) > IN_FLIGHT:
            losses[-1 - IN_FLIGHT].block_until_ready()

    def host_losses(self, losses: list[jax.Array]) -> np.ndarray:
        """The epoch's per-step losses, on the host, once the devices have finished."""
        return np.asarray(jnp.concatenate(losses))


def compile_ahead(uncompiled: Steps, state: TrainState, config: TrainConfig) -> Steps:
    """The variants of `uncompiled` this run calls (`epoch_per_call`, `fuse_steps`), and the eval step, compiled
    ahead of time for the arrays' places on the mesh (or loaded from the persistent cache)."""
    train, mesh, batch_size = uncompiled.train, uncompiled.mesh, config.batch_size
    device, begun = mesh.devices.flat[0], uncompiled.start(state)
    if epoch_per_call(device):
        order = np.zeros((num_batches(len(train.labels), batch_size), batch_size), np.int32)
        lowered = uncompiled.epoch.lower(begun, tuple(train), place(order, batch_sharded(mesh, stacked=True)))
        compiled = uncompiled._replace(single=None, fused=None, epoch=compile_train(lowered, device.platform))
    else:
        batch = place((train.images[:batch_size], train.labels[:batch_size]), batch_sharded(mesh))
        single = compile_train(uncompiled.single.lower(begun, batch), device.platform)
        compiled = uncompiled._replace(single=single, fused=None, epoch=None)
        if fuse_steps(mesh):
            idx = np.arange(FUSED_STEPS * batch_size).reshape(FUSED_STEPS, batch_size) % len(train.labels)
            chunk = place((train.images[idx], train.labels[idx]), batch_sharded(mesh, stacked=True))
            lowered = uncompiled.fused.lower(begun, chunk, unroll=True)
            compiled = compiled._replace(fused=compile_train(lowered, device.platform))
    compile_eval(state, train, config, mesh)
    return compiled


def compile_eval(state: TrainState, train: Split, config: TrainConfig, mesh: Mesh) -> None:
    """The eval step compiled for a test batch as `evaluate` takes it, so that no epoch's evaluation compiles."""
    shape, everywhere = (min(EVAL_BATCH_SIZE, config.test_size), *train.images.shape[1:]), replicated(mesh)
    images = jax.ShapeDtypeStruct(shape, train.images.dtype, sharding=everywhere)
    labels = jax.ShapeDtypeStruct(shape[:1], train.labels.dtype, sharding=everywhere)
    eval_step.lower(state.params, (images, labels)).compile()


def compile_steps(state: TrainState, train: Split, config: TrainConfig, mesh: Mesh) -> tuple[TrainState, Steps, float]:
    """Linen's training steps on `mesh`, compiled ahead of time, so that compilation is timed apart from the
    epochs; `train` as `train_epoch` takes it. Returns the state (as given), the steps and the seconds spent.
    Flax NNX's steps (--api nnx-*): `mnist_jax.steps_nnx.compile_steps`."""
    start = time.perf_counter()
    compiled = compile_ahead(Steps(train, mesh, train_step, train_steps, train_epoch_steps), state, config)
    return state, compiled, time.perf_counter() - start

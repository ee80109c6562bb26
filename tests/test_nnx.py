"""The Flax NNX CNN and its two training routes against the Linen mirror: same parameters, same logits, same steps."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from mnist_common.batches import batch_order
from mnist_common.config import TrainConfig
from mnist_common.weights import WEIGHTS_FILE, read_weights
from mnist_jax import checkpoint as jax_checkpoint
from mnist_jax import steps as jax_steps
from mnist_jax import steps_nnx
from mnist_jax import train as jax_train
from mnist_jax import tuned as jax_tuned
from mnist_jax.model import CNN as LinenCNN
from mnist_jax.model_nnx import CNN, from_linen_params, to_linen_params
from mnist_jax.port import params_from_torch, params_to_torch
from mnist_torch.model import CNN as TorchCNN

SHORT = ["--train-size", "6400", "--quiet"]  # as tests/test_resume.py, whose shared Linen run (`trained_run`) it is
FAN_IN = {"conv1": 1 * 3 * 3, "conv2": 32 * 3 * 3, "fc1": 64 * 7 * 7, "fc2": 256}
CONFIG = TrainConfig()


def paired_leaves(got, want) -> list:
    """``(path, got leaf, want leaf)`` of two trees of the same structure holding the CNN's 8 arrays (4 layers'
    kernel and bias); fails on a different structure or an empty tree, which a plain zip would pass as equal."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    pairs = [
        (path, leaf, other)
        for (path, leaf), other in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True)
    ]
    assert len(pairs) == 2 * len(FAN_IN), [jax.tree_util.keystr(path) for path, _, _ in pairs]
    return pairs


@pytest.fixture(scope="module")
def linen_params():
    return jax_tuned.create_state(0, CONFIG).params  # LinenCNN().init's, compiled as one program


def test_the_same_parameters_give_bit_identical_logits(linen_params, jax_mnist):
    """Both modules call the same convolutions, dots and shared functions on the same arrays: the same bits."""
    images = jnp.asarray(jax_mnist.test.images[:64])
    linen = LinenCNN().apply({"params": linen_params}, images)
    np.testing.assert_array_equal(np.asarray(from_linen_params(linen_params)(images)), np.asarray(linen))


def test_conversion_is_exact_both_ways_and_through_pytorch(linen_params, jax_mnist):
    model = from_linen_params(linen_params)
    for _, got, want in paired_leaves(to_linen_params(model), linen_params):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # PyTorch's state_dict -> Linen params -> NNX -> Linen params -> state_dict: the same tensors.
    torch.manual_seed(3)
    state_dict = TorchCNN().state_dict()
    back = params_to_torch({"params": to_linen_params(from_linen_params(params_from_torch(state_dict)["params"]))})
    assert back.keys() == state_dict.keys()
    for name, tensor in state_dict.items():
        assert torch.equal(back[name], tensor), name


def test_wrong_parameters_are_refused_with_the_expected_tree(linen_params):
    wrong = {**linen_params, "fc2": {"kernel": jnp.zeros((256, 9)), "bias": jnp.zeros(9)}}
    with pytest.raises(ValueError, match=r"not the CNN's Linen parameters: expected .*'fc2'.*\(256, 10\).*got"):
        from_linen_params(wrong)


def test_nnx_init_draws_from_torch_default_distributions():
    """U(+-1/sqrt(fan_in)) for weights and biases, as the Linen module and PyTorch."""
    params = to_linen_params(CNN(rngs=nnx.Rngs(0)))
    for layer, fan_in in FAN_IN.items():
        bound = 1 / math.sqrt(fan_in)
        for name in ("kernel", "bias"):
            values = np.asarray(params[layer][name])
            assert np.abs(values).max() <= bound, (layer, name)
            if values.size >= 1000:
                assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.05), (layer, name)


def test_create_model_starts_from_the_linen_trainers_parameters():
    model, _ = steps_nnx.create_model(7, CONFIG)
    linen = jax_tuned.create_state(7, CONFIG).params
    for _, got, want in paired_leaves(to_linen_params(model), linen):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _stateful(step: Callable, batches: list) -> tuple[list, dict, int]:
    model, optimizer = steps_nnx.create_model(0, CONFIG)
    losses = [step(model, optimizer, batch) for batch in batches]
    return losses, to_linen_params(model), int(optimizer.step[...])


def _cached(batches: list) -> tuple[list, dict, int]:
    model, optimizer = steps_nnx.create_model(0, CONFIG)
    step = steps_nnx.cached_train_step(model, optimizer)
    losses = [step(batch) for batch in batches]
    return losses, to_linen_params(model), int(optimizer.step[...])


def _split(batches: list) -> tuple[list, dict, int]:
    graphdef, state = steps_nnx.split(*steps_nnx.create_model(0, CONFIG))
    losses = []
    for batch in batches:
        state, metrics = steps_nnx.train_step_split(graphdef, state, batch)
        losses.append(metrics["loss"])
    return losses, steps_nnx.linen_params(state), int(steps_nnx.merge(graphdef, state)[1].step[...])


def _leaves(batches: list) -> tuple[list, dict, int]:
    graphdef, state = steps_nnx.split(*steps_nnx.create_model(0, CONFIG))
    leaves, treedef = jax.tree.flatten(state)
    losses = []
    for batch in batches:
        leaves, metrics = steps_nnx.train_step_leaves(graphdef, treedef, leaves, batch)
        losses.append(metrics["loss"])
    state = jax.tree.unflatten(treedef, leaves)
    return losses, steps_nnx.linen_params(state), int(steps_nnx.merge(graphdef, state)[1].step[...])


def _fused(batches: list) -> tuple[list, dict, int]:
    graphdef, state = steps_nnx.split(*steps_nnx.create_model(0, CONFIG))
    stacked = tuple(jnp.stack(parts) for parts in zip(*batches))
    state, metrics = steps_nnx.train_steps_split(graphdef, state, stacked, unroll=True)
    return list(metrics["loss"]), steps_nnx.linen_params(state), int(steps_nnx.merge(graphdef, state)[1].step[...])


#: Every NNX route of `mnist_jax.steps_nnx`: batches -> (each step's loss, the final parameters as Linen's tree,
#: the optimizer's step count).
NNX_ROUTES = {
    "nnx.jit": functools.partial(_stateful, steps_nnx.train_step_nnx_jit),
    "tree mode": functools.partial(_stateful, steps_nnx.train_step_nnx_tree),
    "cached_partial": _cached,
    "split": _split,
    "leaves": _leaves,
    "fused split": _fused,
}
#: The trainer's two (--api nnx-jit, nnx-split) run by default; the routes only the benchmarks time run with e2e.
TRAINER_ROUTES = ("nnx.jit", "split")


@pytest.fixture(scope="module")
def twenty_linen_steps(jax_mnist):
    """Twenty batches of 32 and Linen's `train_step` over them: the losses and the final parameters."""
    batches = [
        (jnp.asarray(jax_mnist.train.images[rows]), jnp.asarray(jax_mnist.train.labels[rows]))
        for rows in (slice(step * 32, (step + 1) * 32) for step in range(20))
    ]
    linen, losses = jax_tuned.create_state(0, CONFIG), []  # the same parameters and conv1 form as create_model
    for batch in batches:
        linen, metrics = jax_steps.train_step(linen, batch)
        losses.append(float(metrics["loss"]))
    return batches, losses, linen.params


@pytest.mark.parametrize(
    "route", [r if r in TRAINER_ROUTES else pytest.param(r, marks=pytest.mark.e2e) for r in NNX_ROUTES]
)
def test_twenty_sgd_steps_of_each_nnx_route_equal_the_linen_steps(route, twenty_linen_steps):
    """Each route traces the same loss, gradient and optax update as Linen's `train_step` (NNX's split and
    merge move arrays, they compute nothing), so XLA compiles the same arithmetic: measured bit-identical
    losses and parameters after 20 steps on this CPU. Asserted within 1e-6 of each parameter's scale, room
    for another XLA fusing the two programs differently, still far below any real difference (a wrong
    momentum or learning rate moves parameters by 1e-3 relative within a few steps). Batches of 32 keep it
    quick; the arithmetic is the same at any size."""
    batches, linen_losses, linen_params = twenty_linen_steps
    losses, params, steps_done = NNX_ROUTES[route](batches)
    assert steps_done == 20
    for step, (loss, want) in enumerate(zip(losses, linen_losses, strict=True)):
        assert float(loss) == pytest.approx(want, rel=1e-6, abs=0), step
    for path, got, want in paired_leaves(params, linen_params):
        scale = float(jnp.abs(want).max())
        assert float(jnp.abs(got - want).max()) <= 1e-6 * scale, jax.tree_util.keystr(path)


def test_the_train_state_and_the_split_state_hold_the_same_arrays(jax_mnist):
    """`to_split_state` and `to_train_state` move arrays between the two forms, by path, and copy none: after a
    step the momentum trace differs from the parameters, so a swap would show."""
    linen = jax_tuned.create_state(0, CONFIG)
    batch = (jnp.asarray(jax_mnist.train.images[:32]), jnp.asarray(jax_mnist.train.labels[:32]))
    linen, _ = jax_steps.train_step(linen, batch)
    _, like = steps_nnx.split(*steps_nnx.create_model(0, CONFIG))
    split_state = steps_nnx.to_split_state(linen, like)
    model, optimizer = nnx.merge(nnx.split(steps_nnx.create_model(0, CONFIG))[0], split_state)
    assert to_linen_params(model)["fc1"]["kernel"] is linen.params["fc1"]["kernel"]
    assert optimizer.opt_state[0].trace["conv2"]["bias"][...] is linen.opt_state[0].trace["conv2"]["bias"]
    assert optimizer.step[...] is linen.step
    back = steps_nnx.to_train_state(split_state, linen)
    assert jax.tree.structure(back) == jax.tree.structure(linen)
    leaves = list(zip(jax.tree.leaves(back), jax.tree.leaves(linen), strict=True))
    assert len(leaves) > 2 * len(FAN_IN) and all(got is want for got, want in leaves)  # parameters, momenta, step


def test_the_trainer_with_api_nnx_jit_takes_the_same_sgd_steps(jax_mnist, tmp_path):
    """`--api nnx-jit` end to end, in process: ten steps, one `nnx.jit` call each, in the trainer's batch order,
    from the seed's parameters, end where ten of Linen's `train_step` do from the same state. Both compile with
    XLA's default options here (jax.jit and nnx.jit alike), so the bits agree; the trainer's Linen path compiles
    with its CPU options instead, whose kernels round differently (tests/test_nnx.py's e2e test compares those)."""
    config = TrainConfig(epochs=1, batch_size=64, train_size=640, out_dir=tmp_path, quiet=True, api="nnx-jit")
    jax_train.main(
        ["--api", "nnx-jit", "--epochs", "1", "--batch-size", "64", "--train-size", "640"]
        + ["--out-dir", str(tmp_path), "--quiet"]
    )
    state = jax_tuned.create_state(0, config)
    for rows in batch_order(config.seed, 1, 640, config.batch_size).astype(np.int32):
        batch = (jnp.asarray(jax_mnist.train.images[rows]), jnp.asarray(jax_mnist.train.labels[rows]))
        state, _ = jax_steps.train_step(state, batch)
    trained = jax_checkpoint.load_params(tmp_path, jax.devices("cpu")[0])
    for path, got, want in paired_leaves(trained, state.params):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=jax.tree_util.keystr(path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["api"] == "nnx-jit" and len(metrics["epochs"]) == 1


@pytest.mark.e2e  # an epoch of training of its own, and a resumed one: a longer real run, as tests/test_resume.py's
def test_an_nnx_split_checkpoint_resumes_under_linen_as_if_linen_had_trained_it(trained_run, tmp_path):
    """`--api nnx-split` compiles as Linen's trainer does (the same options, the same fused calls), so its epoch is
    Linen's bit for bit, and its checkpoint is Linen's format: a Linen run resumed from it ends on the very
    weights and records of the shared two-epoch Linen run."""
    uninterrupted = trained_run("jax")
    jax_train.main(["--api", "nnx-split", "--epochs", "1", *SHORT, "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["api"] == "nnx-split"
    jax_train.main(["--api", "linen", "--epochs", "2", *SHORT, "--out-dir", str(tmp_path), "--resume"])
    expected, resumed = read_weights(uninterrupted / WEIGHTS_FILE), read_weights(tmp_path / WEIGHTS_FILE)
    assert resumed.keys() == expected.keys() and len(expected) == 2 * len(FAN_IN)
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    expected_metrics, resumed_metrics = (
        json.loads((d / "metrics.json").read_text()) for d in (uninterrupted, tmp_path)
    )
    assert learning(resumed_metrics) == learning(expected_metrics)
    assert resumed_metrics["config"]["api"] == "linen"


def learning(metrics: dict) -> list[dict]:
    """The epoch records without the wall-clock fields, which differ from run to run."""
    return [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")} for e in metrics["epochs"]]


@pytest.mark.e2e  # a trainer subprocess, for XLA_FLAGS
def test_api_nnx_jit_is_linen_bit_for_bit_with_the_trainers_cpu_options(tmp_path):
    """`nnx.jit` takes no compiler options, so on the CPU it compiles with XLA's YNNPACK fusions, which round
    differently from the Linen trainer's kernels (and run slower: benchmarks/RESULTS.md, "Flax NNX"). Given the
    trainer's option through XLA_FLAGS instead, the nnx-jit trainer computes Linen's very bits."""
    runs = {}
    for api in ("linen", "nnx-jit"):
        runs[api] = tmp_path / api
        env = {**os.environ, "XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=", "JAX_PLATFORMS": "cpu"}
        subprocess.run(
            [sys.executable, "-m", "mnist_jax.train", "--api", api, "--epochs", "1", "--train-size", "1280"]
            + ["--test-size", "1000", "--out-dir", str(runs[api]), "--quiet"],
            env=env,
            check=True,
            capture_output=True,
        )
    linen, nnx_jit = (read_weights(runs[api] / WEIGHTS_FILE) for api in ("linen", "nnx-jit"))
    assert nnx_jit.keys() == linen.keys() and len(linen) == 2 * len(FAN_IN)
    for name in linen:
        np.testing.assert_array_equal(nnx_jit[name], linen[name], err_msg=name)
    linen_metrics, nnx_metrics = (json.loads((runs[api] / "metrics.json").read_text()) for api in runs)
    assert learning(nnx_metrics) == learning(linen_metrics)

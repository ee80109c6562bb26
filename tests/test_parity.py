"""The JAX mirror computes the same function as the PyTorch reference, on real MNIST, in float32 on the CPU.

Every test starts both sides from the same weights (PyTorch's, ported with `mnist_jax.port`)
and feeds them the same batches (`batch_indices`), so any difference is the frameworks'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax.training.train_state import TrainState
from torch.nn import functional as F

from mnist_common.batches import batch_indices
from mnist_common.config import TrainConfig
from mnist_jax import steps as jax_steps
from mnist_jax import tuned as jax_tuned
from mnist_jax.model import CNN as JaxCNN
from mnist_jax.port import params_from_torch, params_to_torch
from mnist_jax.tuned import TunedCNN
from mnist_torch import steps as torch_steps
from mnist_torch import tuned as torch_tuned
from mnist_torch.data import Split
from mnist_torch.model import CNN as TorchCNN
from mnist_torch.parallel import World
from mnist_torch.runtime import deterministic
from mnist_torch.tuned import TunedCNN as TorchTunedCNN
from tests.numerics import relative_error

CONFIG = TrainConfig()  # the default hyperparameters: lr 0.1, momentum 0.9, batch 128
CPU = torch.device("cpu")


def torch_batches(mnist, steps: int, epoch: int = 1, batch_size: int = CONFIG.batch_size, train_size: int = 60_000):
    for step, idx in enumerate(batch_indices(CONFIG.seed, epoch, train_size, batch_size)):
        if step == steps:
            return
        yield mnist.train.images[idx], mnist.train.labels[idx], idx


#: The JAX model's forms: the lesson's, the accelerators' trainer's, the CPU trainer's (conv1 as a matmul).
JAX_MODELS = {"lesson": JaxCNN(), "tuned": TunedCNN(), "tuned-conv1-as-matmul": TunedCNN(conv1_as_matmul=True)}
MODEL_FORMS = pytest.mark.parametrize("form", list(JAX_MODELS))


def jax_state_from(model: TorchCNN, form: str = "lesson") -> TrainState:
    """The JAX training state holding exactly the torch model's weights, with fresh SGD state, the model in `form`."""
    params = params_from_torch(model.state_dict())["params"]
    return TrainState.create(apply_fn=JAX_MODELS[form].apply, params=params, tx=jax_steps.create_state(0, CONFIG).tx)


@pytest.fixture(scope="module")
def trained_torch_model(trained_run) -> TorchCNN:
    """A model past its first 100 steps (94% accurate), so that predictions are confident, not near ties: the
    session's shared PyTorch run (conftest's `trained_run`), read from its weights.safetensors."""
    from mnist_common.weights import WEIGHTS_FILE
    from mnist_torch.weights import load_weights

    return load_weights(trained_run("torch") / WEIGHTS_FILE, CPU).eval()


@MODEL_FORMS
def test_forward_logits_and_predictions_agree(form, trained_torch_model, mnist, jax_mnist):
    with torch.no_grad():
        expected = trained_torch_model(mnist.test.images[:512]).numpy()
    params = params_from_torch(trained_torch_model.state_dict())
    actual = np.asarray(JAX_MODELS[form].apply(params, jax_mnist.test.images[:512]))
    assert relative_error(expected, actual) < 1e-5
    np.testing.assert_array_equal(expected.argmax(axis=1), actual.argmax(axis=1))
    assert (expected.argmax(axis=1) == mnist.test.labels[:512].numpy()).mean() > 0.9  # a real, trained model


#: Largest relative gradient error between the frameworks, float32 on the CPU: measured 8.3e-6 on an AMD EPYC
#: (AVX2), 6.5e-6 on an Intel Xeon (AVX-512), for either form of conv1; a wrong term in any gradient is >= 1e-3.
GRADIENT_BOUND = 3e-5


@MODEL_FORMS
def test_gradients_agree(form, trained_torch_model, mnist, jax_mnist):
    idx = next(batch_indices(CONFIG.seed, 2, 60_000, CONFIG.batch_size))
    model = trained_torch_model
    model.zero_grad()
    torch_loss = F.cross_entropy(model(mnist.train.images[idx]), mnist.train.labels[idx])
    torch_loss.backward()
    torch_grads = params_from_torch({name: p.grad for name, p in model.named_parameters()})["params"]
    model.zero_grad()

    params = params_from_torch(model.state_dict())["params"]
    images, labels = jax_mnist.train.images[idx], jax_mnist.train.labels[idx]
    loss = jax.value_and_grad(lambda p: jax_steps.cross_entropy(JAX_MODELS[form].apply({"params": p}, images), labels))
    jax_loss, jax_grads = jax.jit(loss)(params)

    assert float(jax_loss) == pytest.approx(torch_loss.item(), rel=1e-6)
    errors = jax.tree.map(lambda t, j: relative_error(np.asarray(t), np.asarray(j)), torch_grads, jax_grads)
    assert len(jax.tree.leaves(errors)) == 8 and max(jax.tree.leaves(errors)) < GRADIENT_BOUND, errors


def test_sgd_momentum_conventions_match_torch():
    """optax.sgd and torch.optim.SGD agree on where lr multiplies and on the first momentum step
    (PyTorch starts the buffer at the first gradient, not at (1 - momentum) * gradient), in float64."""
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(5, 7))
    torch_param = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    torch_opt = torch.optim.SGD([torch_param], lr=0.1, momentum=0.9)
    with jax.enable_x64(True):
        tx = optax.sgd(0.1, momentum=0.9)
        jax_param = jnp.zeros(7, dtype=jnp.float64)
        opt_state = tx.init(jax_param)
        after = []
        for g in grads:
            torch_param.grad = torch.from_numpy(g)
            torch_opt.step()
            updates, opt_state = tx.update(jnp.asarray(g), opt_state, jax_param)
            jax_param = optax.apply_updates(jax_param, updates)
            np.testing.assert_allclose(np.asarray(jax_param), torch_param.detach().numpy(), rtol=0, atol=1e-15)
            after.append(np.asarray(jax_param))
    # Step 1 moves by -lr * g1; step 2 by -lr * (momentum * g1 + g2).
    np.testing.assert_allclose(after[0], -0.1 * grads[0], atol=1e-15)
    np.testing.assert_allclose(after[1], after[0] - 0.1 * (0.9 * grads[0] + grads[1]), atol=1e-15)


@MODEL_FORMS
def test_one_and_two_optimizer_steps_agree(form, mnist, jax_mnist):
    torch_state = torch_steps.create_state(CONFIG.seed, CONFIG, CPU)
    jax_state = jax_state_from(torch_state[0], form)
    for step, (images, labels, idx) in enumerate(torch_batches(mnist, 2), start=1):
        torch_steps.train_step(torch_state, (images, labels))
        jax_state, _ = jax_steps.train_step(jax_state, (jax_mnist.train.images[idx], jax_mnist.train.labels[idx]))
        ported = params_from_torch(torch_state[0].state_dict())["params"]
        diffs = jax.tree.map(lambda t, j: float(np.abs(np.asarray(t) - np.asarray(j)).max()), ported, jax_state.params)
        assert max(jax.tree.leaves(diffs)) < 1e-5, (step, diffs)
    assert int(jax_state.step) == 2


@pytest.mark.e2e  # Inductor compiles the whole step first: seconds on 2 cores
def test_pytorchs_compiled_whole_step_takes_jaxs_cpu_steps(mnist, jax_mnist):
    """What each CPU trainer ships at its fastest: PyTorch's `--mode compile-step` (the whole step as one
    `torch.compile(fullgraph=True)` graph, conv1 as a matmul) against JAX's jitted step with conv1 as a matmul,
    from the same weights on the same batches: parameters within 1e-5 after each of 3 steps, as eager's are."""
    config = TrainConfig(mode="compile-step", train_size=1280)
    # As test_steps' compile-step run trains (a --train-size 1280 run's training set, under the trainer's
    # deterministic settings): Inductor's cache then holds one graph for both tests, compiled by whichever runs first.
    train = Split(mnist.train.images[: config.train_size], mnist.train.labels[: config.train_size])
    torch_state = torch_tuned.create_state(CONFIG.seed, config, CPU)
    assert isinstance(torch_state.model, TorchTunedCNN)
    jax_state = jax_state_from(torch_state.model, "tuned-conv1-as-matmul")
    with deterministic():
        torch_state, steps, _ = torch_tuned.compile_steps(torch_state, train, config, World())
        for step, (_, _, idx) in enumerate(torch_batches(mnist, 3, train_size=config.train_size), start=1):
            _, loss = steps(torch_state, torch.from_numpy(idx)[None])
            jax_batch = (jax_mnist.train.images[idx], jax_mnist.train.labels[idx])
            jax_state, metrics = jax_steps.train_step(jax_state, jax_batch)
            assert abs(float(loss[0]) - float(metrics["loss"])) < 1e-5
            ported = params_from_torch(torch_state.model.state_dict())["params"]
            diffs = jax.tree.map(
                lambda t, j: float(np.abs(np.asarray(t) - np.asarray(j)).max()), ported, jax_state.params
            )
            assert max(jax.tree.leaves(diffs)) < 1e-5, (step, diffs)


def run_both(
    mnist, jax_mnist, steps: int, dtype: str, batch_size: int = CONFIG.batch_size
) -> tuple[np.ndarray, np.ndarray]:
    """Per-step training losses of both lessons from the same initial weights and batches of `batch_size`."""
    torch_state = torch_steps.create_state(CONFIG.seed, CONFIG, CPU)
    with jax.enable_x64(dtype == "float64"):
        if dtype == "float64":
            torch_state[0].double()
        jax_state = jax_state_from(torch_state[0])
        torch_losses, jax_losses = [], []
        for images, labels, idx in torch_batches(mnist, steps, batch_size=batch_size):
            torch_images = images.double() if dtype == "float64" else images
            torch_losses.append(torch_steps.train_step(torch_state, (torch_images, labels))["loss"].item())
            jax_images = jax_mnist.train.images[idx].astype(dtype)
            jax_state, metrics = jax_steps.train_step(jax_state, (jax_images, jax_mnist.train.labels[idx]))
            jax_losses.append(float(metrics["loss"]))
    return np.array(torch_losses), np.array(jax_losses)


@pytest.mark.e2e  # a longer real run: 200 steps of both frameworks in float64
def test_trajectory_is_identical_maths_in_float64(mnist, jax_mnist):
    """200 real steps in float64: per-step losses agree to ~1e-14, so both sides compute the same maths.

    Batches of 32 (lr 0.1, momentum 0.9): float64 convolutions are several times slower than float32 ones on
    both sides, and what is tested, the same maths step after step through the chaotic early phase, does not
    depend on the batch's size. Measured: largest difference 4.7e-15 over 200 steps at batch 128,
    7.5e-14 at batch 32 (Intel Xeon).
    """
    torch_losses, jax_losses = run_both(mnist, jax_mnist, 200, "float64", batch_size=32)
    assert np.abs(torch_losses - jax_losses).max() < 1e-12
    assert torch_losses[-1] < 0.5 * torch_losses[0]  # it trained


@pytest.mark.e2e  # a longer real run: 200 steps of both frameworks
def test_trajectory_in_float32_stays_within_measured_drift(mnist, jax_mnist):
    """200 real steps in float32. The asked-for bound, 1e-3 throughout, cannot hold, and the float64 test shows why
    it is not a difference of maths: float32 rounding (~1e-7 per step; the two sides sum convolutions
    in different orders) is amplified chaotically while lr 0.1 with momentum 0.9 drives the fast early phase.

    Where the amplification starts depends on the CPU's kernels: the losses agree to float32 rounding
    (2.4e-7) for the first 8 steps on every CPU measured; on the Intel Xeon and the AVX-512 AMD EPYC the
    difference stayed under 6.3e-6 to step 20 and peaked at 0.022, on an AVX2-only AMD EPYC it reached
    1.7e-4 at step 9 and peaked at 0.068, while both sides keep learning alike (their last 50 losses'
    means within 6.3e-4). The bounds leave 3x or more headroom over the worst of those.
    """
    torch_losses, jax_losses = run_both(mnist, jax_mnist, 200, "float32")
    diff = np.abs(torch_losses - jax_losses)
    assert diff[:8].max() < 1e-6
    assert diff.max() < 0.2
    assert abs(torch_losses[-50:].mean() - jax_losses[-50:].mean()) < 0.02  # same learning, batch noise aside


def test_round_trips_are_exact():
    torch.manual_seed(1)
    state_dict = TorchCNN().state_dict()
    back = params_to_torch(params_from_torch(state_dict))
    assert back.keys() == state_dict.keys()
    assert all(torch.equal(back[k], state_dict[k]) for k in state_dict)
    TorchCNN().load_state_dict(back, strict=True)

    variables = {"params": jax_tuned.create_state(1, TrainConfig()).params}  # JaxCNN().init's, compiled as one
    again = params_from_torch(params_to_torch(variables))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), variables, again))

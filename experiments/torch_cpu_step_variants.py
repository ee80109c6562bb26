"""Question: which of the optimizations the JAX trainer got also speed up PyTorch's CPU training step?

Date: 2026-12-03. Answer: see benchmarks/RESULTS.md, "Tuning ledger" (the figures come from this tool's
JSON, committed beside it as experiments/results/torch_cpu_step_variants-*.json).

The JAX CPU trainer compiles its whole step (forward, backward, SGD) and fuses 16 steps per call, writes conv1
as one matmul, writes the pooling gradient out and sets XLA:CPU options. PyTorch's `--mode compile` compiled
the forward pass alone. This times, paired and interleaved (`benchmarks.stats`), each class of optimization
on PyTorch's side, all on the trainer's batches (indices into the resident training set, gathered in the step):

    eager             mnist_torch.steps.train_step, as --mode eager runs it
    compile_forward   torch.compile of the model (--mode compile as it was)
    compile_forward_max_autotune   the same in mode="max-autotune-no-cudagraphs"
    compile_optimizer torch.compile of the model and of optimizer.step (PyTorch's "compiled optimizer" recipe)
    compiled_autograd train_step compiled whole, backward through compiled autograd
    step_fullgraph    the whole step written functionally (torch.func.grad_and_value, SGD as tensor maths),
                      torch.compile(fullgraph=True): JAX's jitted step in PyTorch
    step_fullgraph_x4 / _x16        the same with 4 or 16 steps per compiled call (JAX's CPU trainer: 16)
    step_fullgraph_max_autotune     step_fullgraph in mode="max-autotune-no-cudagraphs"
    *_conv1_matmul    conv1 as one matmul of 3x3 patches (JAX's CPU form)
    *_pool_grad       the 2x2 pooling gradient written out (JAX's form)
    *_channels_last   the model and images in channels-last memory format
    *_threads1        torch.set_num_threads(1) instead of the default (one per core)
    trainer_*         the trainer's own prepared step (`mnist_torch.tuned.compile_steps`) in --mode eager, compile,
                      compile-step: what ships

    python -m experiments.torch_cpu_step_variants --rounds 20 --out experiments/results/torch.json [--variants V ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from benchmarks.conditions import LoadMeter, load_warning
from benchmarks.conftest import environment
from benchmarks.stats import interleaved_schedule, paired_speed_ratio, rate_summary
from mnist_common.batches import batch_order
from mnist_common.config import TrainConfig
from mnist_torch import steps, tuned
from mnist_torch.data import load_mnist
from mnist_torch.model import CNN
from mnist_torch.parallel import World
from mnist_torch.tuned import Conv1AsMatmul

STEPS_PER_ROUND = 16  # 2048 images at batch 128: the suite's CPU round


class AvgPool2x2(torch.autograd.Function):
    """F.avg_pool2d(x, 2) with the gradient written out: each cotangent spread over its 2x2 window."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, cotangent: torch.Tensor):
        return cotangent.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4


class VariantCNN(CNN):
    """mnist_torch.model.CNN (the same parameters) with conv1 and the pooling optionally in JAX's CPU forms."""

    def __init__(self, conv1_matmul: bool, pool_grad: bool) -> None:
        super().__init__()
        self.conv1_matmul, self.pool_grad = conv1_matmul, pool_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = AvgPool2x2.apply if self.pool_grad else (lambda t: F.avg_pool2d(t, 2))
        if self.conv1_matmul:
            x = Conv1AsMatmul.apply(x, self.conv1.weight, self.conv1.bias)
        else:
            x = self.conv1(x)
        x = pool(F.relu(x))
        x = pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def functional_steps(state: steps.TrainState, config: TrainConfig, per_call: int) -> Callable:
    """`per_call` SGD steps as one pure function of (parameters, momentum buffers, images, labels, indices):
    torch.optim.SGD's maths (buf = momentum * buf + grad, then p -= lr * buf; the first step's buf is the
    gradient, which a zero buffer gives too)."""
    model = state.model
    names = [name for name, _ in model.named_parameters()]

    def loss(params, images, labels):
        logits = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (images,))
        return F.cross_entropy(logits, labels)

    grad_and_loss = torch.func.grad_and_value(loss)

    def run(params, buffers, images, labels, rows):
        losses = []
        for i in range(per_call):
            grads, value = grad_and_loss(params, images[rows[i]], labels[rows[i]])
            buffers = [config.momentum * b + g for b, g in zip(buffers, grads, strict=True)]
            params = [p - config.lr * b for p, b in zip(params, buffers, strict=True)]
            losses.append(value)
        return params, buffers, torch.stack(losses)

    return run


def build(variant: str, train, order: torch.Tensor, config: TrainConfig) -> tuple[Callable[[], None], float]:
    """The variant's round (STEPS_PER_ROUND steps over `order`'s rows) and its compile seconds (first round)."""
    if variant.startswith("trainer_"):  # what `python -m mnist_torch.train --mode M` runs: its own compile_steps
        mode = variant.removeprefix("trainer_").replace("_", "-")
        trainer_config = TrainConfig(mode=mode)
        state = tuned.create_state(0, trainer_config, train.images.device)
        state, prepared, _ = tuned.compile_steps(state, train, trainer_config, World())
        calls = prepared.calls(order)

        def run_trainer_round() -> None:
            for rows in calls:
                prepared(state, rows)

        start = time.perf_counter()
        run_trainer_round()
        compile_seconds = time.perf_counter() - start
        run_trainer_round()
        return run_trainer_round, compile_seconds
    parts = variant.split("_")
    threads = 1 if "threads1" in parts else torch.get_num_threads()
    torch.manual_seed(0)
    model = VariantCNN("matmul" in parts, "grad" in parts and "pool" in parts)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    images = train.images
    if "channels" in parts:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    state = steps.TrainState(model, optimizer)
    mode = "max-autotune-no-cudagraphs" if "autotune" in parts else "default"

    if variant.startswith("step_fullgraph"):
        per_call = 16 if "x16" in parts else 4 if "x4" in parts else 1
        fn = torch.compile(functional_steps(state, config, per_call), fullgraph=True, mode=mode)
        params = [p.detach().clone() for p in model.parameters()]
        buffers = [torch.zeros_like(p) for p in params]
        chunks = order.split(per_call)

        def run_round() -> None:
            nonlocal params, buffers
            for rows in chunks:
                params, buffers, _ = fn(params, buffers, images, train.labels, rows)

    else:
        if variant.startswith("compile_forward") or variant.startswith("compile_optimizer"):
            state = state._replace(forward=torch.compile(model, mode=mode))
        opt_step = torch.compile(optimizer.step) if variant.startswith("compile_optimizer") else optimizer.step

        def one(idx: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            forward = state.model if state.forward is None else state.forward
            loss = F.cross_entropy(forward(images[idx]), train.labels[idx])
            loss.backward()
            opt_step()

        if variant.startswith("compiled_autograd"):
            one = torch.compile(one)

        def run_round() -> None:
            for idx in order:
                one(idx)

    def timed_round() -> None:
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch._dynamo.config.patch(compiled_autograd=variant.startswith("compiled_autograd")):
                run_round()
        finally:
            torch.set_num_threads(saved)

    start = time.perf_counter()
    timed_round()
    compile_seconds = time.perf_counter() - start
    timed_round()  # warm-up, untimed
    return timed_round, compile_seconds


VARIANTS = (
    "eager",
    "trainer_eager",
    "trainer_compile",
    "trainer_compile_step",
    "compile_forward",
    "compile_forward_max_autotune",
    "compile_optimizer",
    "compiled_autograd",
    "step_fullgraph",
    "step_fullgraph_x4",
    "step_fullgraph_x16",
    "step_fullgraph_max_autotune",
    "eager_conv1_matmul",
    "compile_forward_conv1_matmul",
    "step_fullgraph_conv1_matmul",
    "eager_pool_grad",
    "compile_forward_pool_grad",
    "eager_channels_last",
    "compile_forward_channels_last",
    "eager_threads1",
    "compile_forward_threads1",
    # the classes that helped, together
    "step_fullgraph_channels_last",
    "step_fullgraph_conv1_matmul_channels_last",
    "step_fullgraph_conv1_matmul_x4",
    "step_fullgraph_conv1_matmul_max_autotune",
    "step_fullgraph_conv1_matmul_pool_grad",
    "step_fullgraph_x4_channels_last",
    "step_fullgraph_conv1_matmul_x4_channels_last",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="the first is the base")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    variants = args.variants
    # Every step_fullgraph variant compiles the same Python function again (a new graph each): past Dynamo's default
    # limit of 8 recompilations of one function, fullgraph=True fails instead of falling back.
    torch._dynamo.config.recompile_limit = 64
    warning = load_warning()
    config = TrainConfig()
    data = load_mnist()
    order = torch.from_numpy(batch_order(0, 1, len(data.train.labels), args.batch_size)[:STEPS_PER_ROUND])
    built, compile_seconds, failed = {}, {}, {}
    for v in variants:
        try:
            built[v], compile_seconds[v] = build(v, data.train, order, config)
        except Exception as err:  # a variant this PyTorch cannot compile is a finding, recorded, not a crash
            failed[v] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            print(f"failed {v}: {failed[v]}", flush=True)
            continue
        print(f"built {v}: first round {compile_seconds[v]:.1f} s", flush=True)
    variants = [v for v in variants if v in built]
    seconds: dict[str, list[float | None]] = {v: [None] * args.rounds for v in variants}
    with LoadMeter() as whole:
        for cycle, v in interleaved_schedule(dict.fromkeys(variants, args.rounds)):
            start = time.perf_counter()
            built[v]()
            seconds[v][cycle] = time.perf_counter() - start
    images = STEPS_PER_ROUND * args.batch_size
    base = variants[0]
    rows = [
        {
            "variant": v,
            "images_per_s": rate_summary(seconds[v], images),
            "first_round_seconds": compile_seconds[v],
            f"speed_vs_{base}": paired_speed_ratio(seconds[v], seconds[base]),
            "round_seconds": seconds[v],
        }
        for v in variants
    ]
    record = {
        "question": __doc__.splitlines()[0],
        "batch_size": args.batch_size,
        "rows": rows,
        "failed": failed,  # variants this PyTorch could not build, with the error
        "load_warning": warning,
        **whole.record(),
        **environment("cpu"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for row in rows:
        r, rate = row[f"speed_vs_{base}"], row["images_per_s"]
        print(
            f"{row['variant']:34s} {rate['median']:7.0f} img/s  vs {base}: {r['ratio']:.3f}x "
            f"[{r['low']:.3f}-{r['high']:.3f}]  first round {row['first_round_seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()

"""docs/pytorch-to-jax.md, generated from the source: the two trainers' corresponding pieces one after the other.

    python -m mnist_common.lesson            # write the page
    python -m mnist_common.lesson --check    # exit 1, naming the page, if it differs from the code

A PyTorch user learning JAX reads the model, the state, the training step, evaluation, the epoch loop and the
checkpoints of both frameworks next to each other, with a sentence on each difference. The code is read
from the two packages with `ast` (no framework is imported), so the page cannot drift from what runs:
tests/test_lesson.py fails when it differs from what this module generates.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "pytorch-to-jax.md"


class Section(NamedTuple):
    """One piece of the trainer in both frameworks: the top-level names to show from one module of each (none: that
    framework has no such form), and the tuning ledger's rows on it, as (side, the optimization's first words)."""

    title: str
    difference: str
    module: str  # the module's file name in both packages
    torch_names: tuple[str, ...]
    jax_names: tuple[str, ...]
    ledger: tuple[tuple[str, str], ...] = ()


#: The lesson: what a user writes first, from stock layers, `jax.jit` of one step and PyTorch's eager step.
LESSON = (
    Section(
        "The model",
        "PyTorch's `nn.Module` creates its weights and keeps them; Flax's `CNN` only describes the computation: "
        "`CNN().init(key, images)` draws the parameters as a pytree (nested dicts of arrays) and "
        "`CNN().apply({'params': params}, images)` takes them as an argument. Images are NCHW in PyTorch, NHWC "
        "in Flax; both draw from PyTorch's default initial distributions.",
        "model.py",
        ("CNN",),
        ("torch_kernel_init", "torch_bias_init", "conv", "dense", "relu", "CNN"),
    ),
    Section(
        "The training state",
        "PyTorch's state is two objects that each step changes in place: the model and the optimizer (its "
        "momentum buffers inside). JAX's is one immutable value, Flax's `TrainState`: the parameters, optax's "
        "momentum and the step count, which each step returns anew. The seed is an explicit key "
        "(`jax.random.key`) instead of the global `torch.manual_seed`.",
        "steps.py",
        ("TrainState", "create_state"),
        ("TrainState", "create_state", "_init"),
    ),
    Section(
        "One SGD step",
        "`loss.backward()` fills every parameter's `.grad` and `optimizer.step()` updates the weights in place. "
        "In JAX, `jax.value_and_grad` returns the gradient as a value, `apply_gradients` (optax's SGD, the same "
        "update as `torch.optim.SGD`) returns the new state, and `jax.jit` compiles the whole step, forward, "
        "backward and update, into one XLA program; `donate_argnums=0` lets it reuse the old state's memory.",
        "steps.py",
        ("cross_entropy", "train_step"),
        ("cross_entropy", "train_step"),
    ),
    Section(
        "Evaluation",
        "The same sums in batches, divided once. PyTorch turns autograd off with `torch.no_grad()` and switches "
        "the model to `eval()`; the JAX step is a pure, jitted function of the parameters, which computes no "
        "gradient unless asked.",
        "steps.py",
        ("eval_step", "evaluate"),
        ("eval_step", "evaluate"),
    ),
    Section(
        "The epoch loop",
        "Both visit the same batches in the same order (`mnist_common.batches`) and keep the losses on the "
        "device until the epoch ends, so the host never waits for a step. The loop is the same text in both: "
        "PyTorch's `steps(state, rows)` updates the state in place and returns it; JAX's returns a new state, "
        "which replaces the old one, and JAX's `steps.bound` keeps the calls it queues ahead of the device to "
        "two. `steps` is the run's prepared step, in its tuned form (below).",
        "train.py",
        ("train_epoch",),
        ("train_epoch",),
    ),
    Section(
        "Checkpoints",
        "`torch.save` of the model's and the optimizer's `state_dict`s against Flax's msgpack of the whole state "
        "pytree; both go through the same header, checksum and atomic write (`mnist_common.checkpoint`, "
        "`mnist_common.files`).",
        "checkpoint.py",
        ("save_checkpoint", "load_checkpoint"),
        ("save_checkpoint", "load_checkpoint"),
    ),
)

#: What the tuned path adds (`mnist_torch/tuned.py`, `mnist_jax/tuned.py`), each form with its tuning-ledger rows.
TUNED = (
    Section(
        "conv1 as one matmul",
        "conv1 has one input channel, which both CPU backends' convolution kernels run poorly: as one matmul of "
        "3x3 patches, with its kernel and bias gradients one more matmul, written out. Same parameters; the "
        "tuned model keeps the lesson's layers otherwise.",
        "tuned.py",
        ("Conv1AsMatmul", "TunedCNN"),
        ("conv1_as_matmul", "Conv1AsMatmul", "TunedCNN"),
        (("JAX", "conv1 as one matmul"), ("PyTorch", "conv1 as one matmul")),
    ),
    Section(
        "The pooling gradient written out",
        "XLA differentiates `nn.avg_pool` into a padded reduce-window; the 2x2 windows do not overlap, so the "
        "gradient is each cotangent spread over its window. PyTorch's own pooling backward is one kernel already.",
        "tuned.py",
        (),
        ("avg_pool_2x2", "_avg_pool_2x2_bwd"),
        (("JAX", "the 2x2 pooling gradient"), ("PyTorch", "the 2x2 pooling gradient")),
    ),
    Section(
        "The whole step as one compiled program",
        "`jax.jit` compiles forward, backward and update as one program already. PyTorch gets the same with "
        "`torch.func` and SGD's update written out, under `torch.compile(fullgraph=True)` (`--mode compile-step`), "
        "its parameters channels-last.",
        "tuned.py",
        ("sgd_step", "compile_steps"),
        (),
        (
            ("PyTorch", "the whole step in one graph"),
            ("PyTorch", "channels-last memory"),
            ("PyTorch", "**both, in the whole step"),
            ("JAX", "the whole step jitted"),
            ("JAX", "channels-last memory"),
        ),
    ),
    Section(
        "Several steps per call",
        "One dispatch for many steps: on the CPU 16 steps unrolled into one call, on an accelerator a whole epoch "
        "as one rolled `lax.scan` over the resident training set (XLA:CPU runs a rolled loop's backward "
        "convolutions many times slower).",
        "tuned.py",
        (),
        ("FUSED_STEPS", "_step", "_train_steps", "train_steps", "_train_epoch_steps", "train_epoch_steps"),
        (
            ("JAX", "several steps per compiled call"),
            ("JAX", "a whole epoch per call"),
            ("PyTorch", "several steps per compiled call"),
        ),
    ),
    Section(
        "Compiler options",
        "XLA:CPU's YNNPACK fusions ran the training step slower than its own kernels: the training steps compile "
        "without them. PyTorch's nearest lever, Inductor's autotuning, gained nothing.",
        "tuned.py",
        (),
        ("CPU_TRAIN_COMPILER_OPTIONS", "compile_train"),
        (("JAX", "XLA:CPU's YNNPACK fusions off"), ("PyTorch", '`mode="max-autotune')),
    ),
    Section(
        "CUDA graphs",
        "On a GPU the host's launches are the limit: PyTorch captures the eager step once and replays it per batch; "
        "JAX's whole-epoch call (above) removes the same cost.",
        "tuned.py",
        ("CapturedStep",),
        (),
        (("PyTorch", "a CUDA graph of the whole step"),),
    ),
)

LEDGER = ROOT / "benchmarks" / "RESULTS.md"


def ledger_rows() -> list[list[str]]:
    """The tuning ledger's rows (side, optimization, tried as, effect, adopted), from benchmarks/RESULTS.md."""
    text = LEDGER.read_text().split("## Tuning ledger", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in text.splitlines()]
    return [row for row in rows if len(row) == 5 and row[0] in ("JAX", "PyTorch")]


def ledger_table(wanted: tuple[tuple[str, str], ...], rows: list[list[str]]) -> str:
    """The ledger's rows on one form, as a table; a row no longer in the ledger is an error, not a gap."""
    found = []
    for side, start in wanted:
        match = [row for row in rows if row[0] == side and row[1].startswith(start)]
        if not match:
            raise LookupError(f"{LEDGER.relative_to(ROOT)}'s tuning ledger has no {side} row '{start}...'")
        found += match
    lines = ["| side | optimization | effect, paired [95% interval] | adopted |", "|---|---|---|---|"]
    table = "\n".join(lines + [f"| {r[0]} | {r[1]} | {r[3]} | {r[4]} |" for r in found]) + "\n"
    return table.replace("](#", "](../benchmarks/RESULTS.md#")  # the ledger's links into its own page


def definitions(path: Path, names: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """Each named top-level definition of `path` (a function or class with its decorators, or an assignment
    with the ``#:`` comment above it) as (first line, last line, source), in the order asked."""
    text = path.read_text()
    lines = text.splitlines()
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = (min([node.lineno, *(d.lineno for d in node.decorator_list)]), node.end_lineno)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    first = node.lineno
                    while first > 1 and lines[first - 2].startswith("#:"):
                        first -= 1
                    found[target.id] = (first, node.end_lineno)
    missing = [name for name in names if name not in found]
    if missing:
        raise LookupError(f"{path.relative_to(ROOT)} no longer defines {missing}; update mnist_common/lesson.py")
    return [(found[n][0], found[n][1], "\n".join(lines[found[n][0] - 1 : found[n][1]])) for n in names]


def code(framework: str, module: str, names: tuple[str, ...]) -> str:
    """The named definitions of mnist_<framework>/<module> as one code block, headed by links to their lines."""
    path = ROOT / f"mnist_{framework}" / module
    if not names:
        label = {"torch": "PyTorch", "jax": "JAX"}[framework]
        return f"**{label}**: no such form in `{path.relative_to(ROOT)}` (the ledger says why).\n"
    parts = definitions(path, names)
    where = ", ".join(
        f"[`{n}`](../{path.relative_to(ROOT)}#L{a}-L{b})" for n, (a, b, _) in zip(names, parts, strict=True)
    )
    label = {"torch": "PyTorch", "jax": "JAX"}[framework]
    body = "\n\n\n".join(source for _, _, source in parts)  # as in the source, so ruff formats it alike
    return f"**{label}**, `{path.relative_to(ROOT)}`: {where}\n\n```python\n{body}\n```\n"


def section(s: Section, rows: list[list[str]]) -> str:
    ledger = (
        f"\nFrom the [tuning ledger](../benchmarks/RESULTS.md):\n\n{ledger_table(s.ledger, rows)}" if s.ledger else ""
    )
    return (
        f"\n### {s.title}\n\n{s.difference}\n{ledger}\n{code('torch', s.module, s.torch_names)}\n"
        f"{code('jax', s.module, s.jax_names)}"
    )


def page() -> str:
    head = (
        "# From PyTorch to JAX: the same trainer in both\n\n"
        "<!-- generated by `python -m mnist_common.lesson` from the source; edit the code or "
        "mnist_common/lesson.py, not this page (tests/test_lesson.py checks it) -->\n\n"
        "The pieces of `python -m mnist_torch.train` and `python -m mnist_jax.train` that differ by framework, "
        "PyTorch first, then JAX, each with what differs: first the lesson, the code a user writes first "
        "(`model.py`, `steps.py`, `train.py`), then what the tuned path adds (`tuned.py`), each form with its "
        "measured effect. What both share (the batch order, the command line, the run's bookkeeping, the files) "
        "is written once in `mnist_common` and is not repeated here. Back to the [README](../README.md); the "
        "design and the parity bounds: [Design](design.md).\n"
    )
    rows = ledger_rows()
    lesson = "".join(section(s, rows) for s in LESSON)
    tuned = "".join(section(s, rows) for s in TUNED)
    return (
        f"{head}\n## The lesson\n{lesson}\n## What the tuned path adds\n\n"
        "The trainers run these forms; tests/test_tuned.py and tests/test_parity.py tie each to the lesson (the same "
        f"parameters in, the same logits and gradients out).\n{tuned}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_common.lesson", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from the code")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            sys.exit(f"error: {PAGE} differs from the code; run python -m mnist_common.lesson")
        return
    PAGE.write_text(text)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()

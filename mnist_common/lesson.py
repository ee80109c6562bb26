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
    """One piece of the trainer in both frameworks: the top-level names to show from one module of each."""

    title: str
    difference: str
    module: str  # the module's file name in both packages
    torch_names: tuple[str, ...]
    jax_names: tuple[str, ...]


SECTIONS = (
    Section(
        "The model",
        "PyTorch's `nn.Module` creates its weights and keeps them; Flax's `CNN` only describes the computation: "
        "`CNN().init(key, images)` draws the parameters as a pytree (nested dicts of arrays) and "
        "`CNN().apply({'params': params}, images)` takes them as an argument. Images are NCHW in PyTorch, NHWC "
        "in Flax; both draw from PyTorch's default initial distributions.",
        "model.py",
        ("CNN",),
        ("CNN",),
    ),
    Section(
        "The training state",
        "PyTorch's state is two objects that each step changes in place: the model and the optimizer (its "
        "momentum buffers inside). JAX's is one immutable value, Flax's `TrainState`: the parameters, optax's "
        "momentum and the step count, which each step returns anew. The seed is an explicit key "
        "(`jax.random.key`) instead of the global `torch.manual_seed`.",
        "steps.py",
        ("TrainState", "create_state"),
        ("create_state",),
    ),
    Section(
        "One SGD step",
        "`loss.backward()` fills every parameter's `.grad` and `optimizer.step()` updates the weights in place. "
        "In JAX, `jax.value_and_grad` returns the gradient as a value, `apply_gradients` (optax's SGD, the same "
        "update as `torch.optim.SGD`) returns the new state, and `jax.jit` compiles the whole step, forward, "
        "backward and update, into one XLA program; `donate_argnums=0` lets it reuse the old state's memory.",
        "steps.py",
        ("train_step",),
        ("cross_entropy", "loss_and_grads", "_train_step", "train_step"),
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
        "device until the epoch ends, so the host never waits for a step. PyTorch's `steps(state, rows)` updates "
        "the state in place; JAX's returns the new state, which replaces the old one, and the CPU path runs 16 "
        "steps per compiled call with at most `IN_FLIGHT` calls queued.",
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
    parts = definitions(path, names)
    where = ", ".join(
        f"[`{n}`](../{path.relative_to(ROOT)}#L{a}-L{b})" for n, (a, b, _) in zip(names, parts, strict=True)
    )
    label = {"torch": "PyTorch", "jax": "JAX"}[framework]
    body = "\n\n\n".join(source for _, _, source in parts)  # as in the source, so ruff formats it alike
    return f"**{label}**, `{path.relative_to(ROOT)}`: {where}\n\n```python\n{body}\n```\n"


def page() -> str:
    head = (
        "# From PyTorch to JAX: the same trainer in both\n\n"
        "<!-- generated by `python -m mnist_common.lesson` from the source; edit the code or "
        "mnist_common/lesson.py, not this page (tests/test_lesson.py checks it) -->\n\n"
        "The pieces of `python -m mnist_torch.train` and `python -m mnist_jax.train` that differ by framework, "
        "PyTorch first, then JAX, each with what differs. What both share (the batch order, the command line, "
        "the run's bookkeeping, the files) is written once in `mnist_common` and is not repeated here. Back to "
        "the [README](../README.md); the design and the parity bounds: [Design](design.md).\n"
    )
    sections = [
        f"\n## {s.title}\n\n{s.difference}\n\n{code('torch', s.module, s.torch_names)}\n"
        f"{code('jax', s.module, s.jax_names)}"
        for s in SECTIONS
    ]
    return head + "".join(sections)


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

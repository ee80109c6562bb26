"""The layout the two trainers keep: mirrored public names, no import cycle, a framework-free common package.

Read from the source with `ast` (nothing is imported, so these run in well under a second), except the
check that `mnist_common` loads no framework, which imports it in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mnist_common", "mnist_torch", "mnist_jax")
FRAMEWORKS = ("torch", "torchvision", "jax", "jaxlib", "flax", "optax")

#: The names both tuned.py define, in this relative order: conv1 as one matmul and the model that uses it, where
#: the trainer uses it, the trainer's state, what `train_epoch` calls and the function that prepares it. The rest is
#: each framework's own tuning (JAX's pooling gradient, fused and whole-epoch steps, compiler options; PyTorch's
#: whole-step compile and CUDA-graph capture).
CORRESPONDING_TUNED = [
    "Conv1AsMatmul",
    "TunedCNN",
    "conv1_as_matmul_on",
    "create_state",
    "place_splits",
    "Steps",
    "compile_steps",
]

#: The names both runtime.py define, in this order: the device, the settings that make the steps deterministic,
#: and the libraries' versions metrics.json records. The rest is each framework's own machinery (JAX's backends,
#: compiler options and the variant each platform runs; PyTorch's --mode check and Inductor's cache repair).
CORRESPONDING_RUNTIME = [
    "resolve_device",
    "processes",
    "deterministic",
    "preparing",
    "prepare_steps",
    "failure",
    "versions",
]


def public_names(path: Path) -> list[str]:
    """The public names a module defines at its top level, in order: functions, classes and assigned names
    (constants, type aliases), without imports and without names starting with ``_``."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found = [node.name]
        elif isinstance(node, ast.Assign):
            found = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = [node.target.id]
        else:
            continue
        names += [name for name in found if not name.startswith("_") and name not in names]
    return names


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imported_modules(path: Path) -> set[str]:
    """The project modules `path` imports, from every import statement anywhere in it: module level,
    ``if TYPE_CHECKING:`` blocks, function bodies. ``from mnist_torch import data`` counts as mnist_torch.data."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in PACKAGES:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).glob("*.py"))}
    return {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_two_train_modules_define_the_same_public_names_in_the_same_order():
    torch_names = public_names(ROOT / "mnist_torch" / "train.py")
    jax_names = public_names(ROOT / "mnist_jax" / "train.py")
    assert torch_names == jax_names, (
        "mnist_torch/train.py and mnist_jax/train.py no longer mirror each other: their public top-level names "
        f"(in order) differ\n  torch only: {[n for n in torch_names if n not in jax_names]}\n"
        f"  jax only:   {[n for n in jax_names if n not in torch_names]}\n"
        f"  torch: {torch_names}\n  jax:   {jax_names}\n"
        "keep framework-specific helpers in steps.py (or another module), or private (leading _)"
    )
    assert {"train_epoch", "train", "main"} <= set(torch_names)


def parameters(path: Path) -> dict[str, list[str]]:
    """Each top-level function's and each top-level class's methods' parameter names, in order (positional, then
    keyword-only), by name ("Steps.__call__" for a method)."""
    found = {}

    def add(node: ast.AST, prefix: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            found[prefix + node.name] = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]

    for node in ast.parse(path.read_text()).body:
        add(node, "")
        if isinstance(node, ast.ClassDef):
            for method in node.body:
                add(method, f"{node.name}.")
    return found


#: Parameter names that differ by framework alone: the model's weights (PyTorch's module, JAX's parameter tree)
#: and where the run's devices are (PyTorch's ranks, JAX's mesh).
FRAMEWORK_PARAMETERS = {"model": "params", "world": "mesh"}

#: The mirrored functions whose parameters correspond one for one, under FRAMEWORK_PARAMETERS. Left out:
#: `conv1_as_matmul_on`, whose choice PyTorch makes per --mode and JAX per device, and `place_splits`, where JAX places
#: the data on its mesh and each PyTorch rank on its own device.
CORRESPONDING_PARAMETERS = {
    "steps": ["create_state", "cross_entropy", "train_step", "eval_step", "predict_step", "evaluate", "predict"],
    "tuned": [
        "create_state",
        "Steps.calls",
        "Steps.__call__",
        "Steps.wait",
        "Steps.bound",
        "Steps.host_losses",
        "compile_steps",
    ],
    "train": ["train_epoch", "params_finite", "train", "main"],
}


def test_the_two_lesson_steps_modules_define_the_same_names_in_the_same_order():
    """The lesson's steps.py pair name for name: a reader puts them side by side and sees only the framework."""
    torch_names, jax_names = (public_names(ROOT / f"mnist_{f}" / "steps.py") for f in ("torch", "jax"))
    assert torch_names == jax_names, f"mnist_torch/steps.py defines {torch_names}, mnist_jax/steps.py {jax_names}"


#: The lesson, what a user writes first, and its size: the model, the step and the loop of each framework.
LESSON_LINES = {"model.py": 70, "steps.py": 120}


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_the_lesson_is_short_and_its_docstrings_no_longer_than_their_code(framework):
    """The lesson's model.py and steps.py stay within their sizes, and in them, and in train.py, no docstring is
    longer than the code it documents: the measurement behind a form belongs in docs/design.md."""
    for name in ("model.py", "steps.py", "train.py"):
        source = (ROOT / f"mnist_{framework}" / name).read_text()
        if name in LESSON_LINES:
            lines = len(source.splitlines())
            assert lines <= LESSON_LINES[name], (
                f"mnist_{framework}/{name} has {lines} lines, at most {LESSON_LINES[name]}"
            )
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or ast.get_docstring(node) is None:
                continue
            doc, body = node.body[0], node.body[1:]
            doc_lines = doc.end_lineno - doc.lineno + 1
            code_lines = sum(b.end_lineno - b.lineno + 1 for b in body) + len(node.decorator_list) + 1
            assert doc_lines <= code_lines, (
                f"mnist_{framework}/{name}: {node.name}'s docstring ({doc_lines} lines) is longer than its code "
                f"({code_lines}); keep a one-line reason and move the story to docs/design.md"
            )


@pytest.mark.parametrize(
    ("module", "corresponding"), [("tuned", CORRESPONDING_TUNED), ("runtime", CORRESPONDING_RUNTIME)]
)
def test_the_mirrored_modules_define_the_corresponding_names_in_the_same_order(module, corresponding):
    for framework in ("torch", "jax"):
        names = public_names(ROOT / f"mnist_{framework}" / f"{module}.py")
        missing = [n for n in corresponding if n not in names]
        assert not missing, f"mnist_{framework}/{module}.py no longer defines {missing}, which the other mirrors"
        order = [n for n in names if n in corresponding]
        assert order == corresponding, (
            f"mnist_{framework}/{module}.py defines the corresponding names in the order {order}, "
            f"expected {corresponding}"
        )


def test_the_mirrored_runtime_functions_take_the_same_parameters():
    torch_params, jax_params = (parameters(ROOT / f"mnist_{f}" / "runtime.py") for f in ("torch", "jax"))
    for name in CORRESPONDING_RUNTIME:
        torch_side, jax_side = [FRAMEWORK_PARAMETERS.get(p, p) for p in torch_params[name]], jax_params[name]
        assert torch_side == jax_side, f"{name} takes {torch_side} in mnist_torch/runtime.py, {jax_side} in mnist_jax's"


@pytest.mark.parametrize("module", sorted(CORRESPONDING_PARAMETERS))
def test_the_mirrored_step_and_train_functions_take_the_same_parameters(module):
    """`diff -y` of the two files pairs each definition's parameter list, not just its name."""
    torch_params, jax_params = (parameters(ROOT / f"mnist_{f}" / f"{module}.py") for f in ("torch", "jax"))
    for name in CORRESPONDING_PARAMETERS[module]:
        torch_side = [FRAMEWORK_PARAMETERS.get(p, p) for p in torch_params[name]]
        jax_side = jax_params.get(name, jax_params.get(f"_{name}"))  # `train_step = jax.jit(_train_step, ...)`
        assert torch_side == jax_side, (
            f"{name} takes {torch_params[name]} in mnist_torch/{module}.py and {jax_side} in mnist_jax's; "
            f"expected the same names in the same order (up to {FRAMEWORK_PARAMETERS})"
        )


def test_no_import_cycle_among_the_project_modules():
    graph = import_graph()
    assert "mnist_torch.steps" in graph and "mnist_common.config" in graph, sorted(graph)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dependency in sorted(graph[module]):
            if state.get(dependency) == 1:
                cycles.append(
                    path[path.index(dependency) :] + [dependency] if dependency in path else [module, dependency]
                )
            elif dependency not in state:
                visit(dependency, path + [dependency])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, (
        "import cycles (every import statement counts, TYPE_CHECKING and function bodies too): "
        + "; ".join(" -> ".join(cycle) for cycle in cycles)
    )


def test_no_module_imports_a_trainer():
    """train.py is the top: the loop and its command. What evaluate and predict share with it lives below it,
    in steps.py, so that nothing reaches up into a trainer (tests and benchmarks aside)."""
    graph = import_graph()
    for framework in ("torch", "jax"):
        importers = sorted(m for m, deps in graph.items() if f"mnist_{framework}.train" in deps)
        assert not importers, f"mnist_{framework}.train is imported by {importers}; move what they use into steps.py"


def test_mnist_common_loads_no_framework():
    modules = sorted(module_name(p) for p in (ROOT / "mnist_common").glob("*.py"))
    code = (
        "import importlib, json, runpy, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "sys.argv = ['python -m mnist_common.compare', '--help']\n"
        "try:\n"
        "    runpy.run_module('mnist_common.compare', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], (
        f"importing mnist_common ({', '.join(modules)}) and its compare --help loaded frameworks: {loaded}"
    )


def test_mnist_jax_imports_mnist_torch_only_for_the_data_loader():
    uses = {}
    for path in sorted((ROOT / "mnist_jax").glob("*.py")):
        torch_modules = sorted(m for m in imported_modules(path) if m.split(".")[0] == "mnist_torch")
        if torch_modules:
            uses[f"mnist_jax/{path.name}"] = torch_modules
    # mnist_jax/port.py converts to and from torch tensors with torch itself; were it to import mnist_torch,
    # the weight port would be the one other allowed use.
    assert uses == {"mnist_jax/data.py": ["mnist_torch.data"]}, (
        f"mnist_jax's imports of mnist_torch drifted: {uses}; expected only mnist_jax/data.py -> mnist_torch.data "
        "(the torchvision data loader)"
    )


def test_every_experiment_is_headed_by_its_question_date_and_answer():
    """experiments/ holds finished research: each module's docstring opens with the question it answered, then
    the date and the answer, so that a reader knows what it settled before reading how."""
    for path in sorted((ROOT / "experiments").glob("*.py")):
        if path.name == "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert doc.startswith("Question: "), f"{path.name}: the docstring must open with 'Question: ...'"
        assert re.search(r"^Date: \d{4}-\d{2}-\d{2}\. Answer: \S", doc, re.MULTILINE), (
            f"{path.name}: the docstring must hold a line 'Date: YYYY-MM-DD. Answer: ...'"
        )

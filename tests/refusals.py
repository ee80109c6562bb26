"""Running a command and reading the one line it refuses with, shared by the tests of refusals.

A refused command prints one ``error:`` line (exit status 1), or, for a command-line error, argparse's usage
block and one error line (exit status 2, `mnist_common.cli`); never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_common.cli import check_command_line

REPO = Path(__file__).resolve().parents[1]


def run(
    module: str, *args: object, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m module args`` with `env` added to this environment; a hang (a FIFO opened) fails the test."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def one_line(result: subprocess.CompletedProcess, status: int = 1) -> str:
    """The single stderr line of a refused command, checked: its exit status and that nothing else was printed."""
    lines = result.stderr.splitlines()
    assert result.returncode == status, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def argparse_line(result: subprocess.CompletedProcess) -> str:
    """The error line of a command-line refusal (exit status 2): argparse's usage block, then one error line."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[0].startswith("usage: ") and all(line.startswith(" ") for line in lines[1:-1]), result.stderr
    assert ": error: " in lines[-1] and "Traceback" not in result.stderr, result.stderr
    return lines[-1]


def refused_in_process(capsys, command: str, framework: str, *args: object) -> str:
    """`argparse_line` of `check_command_line` refusing ``python -m mnist_<framework>.<command> ARGS``, in-process."""
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(command, framework, [str(arg) for arg in args])
    out, err = capsys.readouterr()
    return argparse_line(subprocess.CompletedProcess([], exit_info.value.code, out, err))


def jax_environment_refusal(capsys, command: str, *args: object) -> str:
    """The one ``error:`` line (exit status 1) `check_command_line` ends a JAX command with, in-process."""
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(command, "jax", [str(arg) for arg in args])
    message = exit_info.value.code  # a string: Python prints it on stderr and exits with status 1
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    assert capsys.readouterr() == ("", "")
    return message

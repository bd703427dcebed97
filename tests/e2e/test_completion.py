"""``pipekit completion bash|zsh|fish``: each script loads in its real shell
and completes every subcommand, options and choices, by running the
installed ``pipekit`` the way the shell does on Tab. zsh and fish are
skipped with a reason where they are not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pipekit.cli._commands import COMMANDS

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(
    not (BIN / "pipekit").exists(), reason=f"no pipekit console script beside {sys.executable}"
)


def shell(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def bash_complete(line: str, cwd: Path) -> list[str]:
    """What bash offers for ``line`` (cursor at its end), through the script."""
    words = line.split(" ")
    script = (
        "source <(pipekit completion bash) || exit 9\n"
        f'COMP_LINE="{line}"; COMP_POINT={len(line)}; COMP_WORDS=({" ".join(map(repr, words))})\n'
        f"COMP_CWORD={len(words) - 1}; COMP_TYPE=9\n"
        f'_python_argcomplete pipekit "{words[-1]}" "{words[-2]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = shell(["bash", "-c", script], cwd)
    assert proc.returncode == 0, proc.stderr
    return [word.strip() for word in proc.stdout.splitlines()]


def test_bash_script_loads(tmp_path: Path) -> None:
    proc = shell(["bash", "-c", "source <(pipekit completion bash); complete -p pipekit"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("-F _python_argcomplete pipekit")


def test_bash_completes_every_subcommand(tmp_path: Path) -> None:
    offered = bash_complete("pipekit ", tmp_path)
    assert set(COMMANDS) <= set(offered), offered
    assert "completion" in offered and "init" in offered


def test_bash_completes_options_and_choices(tmp_path: Path) -> None:
    assert set(bash_complete("pipekit run --j", tmp_path)) == {"--jobs", "--json"}
    assert {"bash", "zsh", "fish"} <= set(bash_complete("pipekit completion ", tmp_path))
    assert "--log-format" in bash_complete("pipekit --log", tmp_path)


def test_completing_runs_nothing(tmp_path: Path) -> None:
    (tmp_path / "pipekit.toml").write_text(
        '[[stages]]\nname = "a"\nuses = "shell"\noutputs = ["out.txt"]\n'
        'params = { cmd = "echo ran > {output}" }\n'
    )
    assert "--force" in bash_complete("pipekit run --f", tmp_path)
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / ".pipekit").exists()


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_registers_with_compinit(tmp_path: Path) -> None:
    script = (
        "autoload -U compinit && compinit -u -D && source <(pipekit completion zsh)"
        " && print -r -- $_comps[pipekit]"
    )
    proc = shell(["zsh", "-f", "-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "_python_argcomplete"


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_every_subcommand(tmp_path: Path) -> None:
    script = (
        "pipekit completion fish | source; complete -C 'pipekit '; complete -C 'pipekit run --j'"
    )
    proc = shell(["fish", "--no-config", "-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr
    offered = {line.split("\t")[0] for line in proc.stdout.splitlines()}
    assert set(COMMANDS) <= offered, offered
    assert {"--jobs", "--json"} <= offered


def test_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    proc = shell(["pipekit", "completion", "tcsh"], tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'tcsh'" in proc.stderr

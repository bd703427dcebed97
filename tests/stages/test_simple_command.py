"""Simple commands started without /bin/sh: the parser agrees with the shell
on every command it accepts, and a pipeline gives the same outputs and the
same failures whether its commands go through the shell or not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipekit_stages.simple_command import open_redirects, parse

PRINTF = "/usr/bin/printf"


def shell_words(command: str, cwd: Path) -> list[str] | None:
    """What /bin/sh passes to printf for ``command`` (None if sh failed)."""
    proc = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, capture_output=True, timeout=10)
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().split("\0")[:-1]


# Characters a command may hold, the shell's special ones included.
ALPHABET = "ab-_.:/=%@+,09 \t'\"$*?[]~#;&|()<>{}!\\`\n^"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tail=st.text(alphabet=ALPHABET, max_size=16))
def test_accepted_commands_mean_what_the_shell_reads(tail: str, tmp_path: Path) -> None:
    command = f"{PRINTF} '%s\\0' START {tail}"
    parsed = parse(command)
    if parsed is None:
        return  # left to the shell
    assert parsed.words[:3] == [PRINTF, "%s\\0", "START"]
    assert all(target for _op, target in parsed.redirects)
    if parsed.redirects:
        return  # files: compared end to end below
    assert shell_words(command, tmp_path) == parsed.words[2:]


@pytest.mark.parametrize(
    "command, words, redirects",
    [
        ("tr a-z A-Z < in > out", ["tr", "a-z", "A-Z"], [("<", "in"), (">", "out")]),
        ("tr a-z A-Z <in >>out", ["tr", "a-z", "A-Z"], [("<", "in"), (">>", "out")]),
        ("cat 'a b' x'y z'w", ["cat", "a b", "xy zw"], []),
        ("cat > a > b", ["cat"], [(">", "a"), (">", "b")]),
        ("  wc  -l\t''  ", ["wc", "-l", ""], []),
    ],
)
def test_simple_commands(command: str, words: list[str], redirects: list[tuple[str, str]]) -> None:
    parsed = parse(command)
    assert parsed is not None
    assert (parsed.words, parsed.redirects) == (words, redirects)


@pytest.mark.parametrize(
    "command",
    [
        "echo hi",  # a builtin: /usr/bin/echo may differ
        "printf x",
        "test -f x",
        "[ -f x ]",
        "cd /tmp",
        "exec tr a b",
        "if true; then x; fi",
        "FOO=1 env",
        "cat $HOME",
        "cat *.txt",
        "cat ~/x",
        'cat "x"',
        "cat \\x",
        "cat x 2>err",
        "cat x>y",
        "cat<x",
        "cat x | wc",
        "cat x; ls",
        "cat x && ls",
        "cat x &",
        "cat <<EOF",
        "cat <> x",
        "cat >& 2",
        "cat >| x",
        "cat > ",
        "cat > ''",
        "cat 'x",
        "cat x # comment",
        "cat {a,b}",
        "cat `ls`",
        "cat x\nls",
        "",
        "   ",
        "> out",
    ],
)
def test_everything_else_goes_to_the_shell(command: str) -> None:
    assert parse(command) is None


def test_redirections_are_opened_like_the_shell(tmp_path: Path) -> None:
    (tmp_path / "in").write_text("x\n")
    (tmp_path / "a").write_text("old a\n")
    (tmp_path / "b").write_text("old b\n")
    fds = open_redirects([("<", "in"), (">", "a"), (">>", "b")], str(tmp_path))
    try:
        assert os.read(fds[0], 10) == b"x\n"
        os.write(fds[1], b"new\n")
    finally:
        for fd in fds.values():
            os.close(fd)
    # `> a >> b`: a is truncated, then stdout is b (appended to)
    assert (tmp_path / "a").read_text() == ""
    assert (tmp_path / "b").read_text() == "old b\nnew\n"
    with pytest.raises(FileNotFoundError):
        open_redirects([(">", "out"), ("<", "missing")], str(tmp_path))
    assert (tmp_path / "out").exists()  # opened before the failing one, as sh does


# -- end to end: the same pipeline through the shell and without it -------------

SCRIPT = "tool.sh"


def make_project(project: Project) -> None:
    project.write("in.txt", "hello world\nsecond line\n")
    project.write("other file.txt", "more\n")
    project.write(SCRIPT, "echo from a script without a shebang\n")
    os.chmod(project.root / SCRIPT, 0o755)
    project.pipeline(
        [
            {
                "name": "upper",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out/upper.txt"],
                "params": {"cmd": "tr a-z A-Z < {input} > {output}"},
            },
            {
                "name": "append",
                "uses": "shell",
                "inputs": ["in.txt", "other file.txt"],
                "outputs": ["out/append.txt"],
                "params": {"cmd": "cat {inputs[0]} > {output} && cat {inputs[1]} >> {output}"},
            },
            {
                "name": "both",
                "uses": "shell",
                "inputs": ["in.txt", "other file.txt"],
                "outputs": ["out/both.txt"],
                "params": {"cmd": "cat {inputs} >> {output}"},
            },
            {
                "name": "script",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out/s.txt"],
                "params": {"cmd": "./tool.sh > {output}"},
            },
            {
                "name": "env",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out/env.txt"],
                "params": {"cmd": "env > {output}", "env": {"PIPEKIT_TEST_VAR": "from params"}},
            },
        ]
    )


def run_record(project: Project, summary: dict[str, object]) -> dict[str, dict[str, object]]:
    """Each stage's entry in the run record (which keeps ``info``)."""
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    return {s["name"]: s for s in run["stages"]}


def outputs(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((root / "out").iterdir())}


def env_lines(text: str, root: Path) -> set[str]:
    skip = ("PIPEKIT_SHELL=",)  # set differently for the two runs
    text = text.replace(str(root), "<project>")  # PWD: the project's folder
    return {line for line in text.splitlines() if not line.startswith(skip)}


def test_a_pipeline_gives_the_same_outputs_with_and_without_the_shell(
    project: Project, tmp_path: Path
) -> None:
    make_project(project)
    summary = project.run_json(env=project.env(PIPEKIT_SHELL="auto"))
    direct = outputs(project.root)
    infos = {name: s["info"] for name, s in run_record(project, summary).items()}
    assert infos["upper"].get("shell") is False
    assert infos["both"].get("shell") is False
    assert infos["append"].get("shell") is None  # `&&`: the shell's
    assert infos["script"].get("shell") is None  # ENOEXEC: the shell runs it

    other = Project(tmp_path / "viash")
    other.root.mkdir()
    make_project(other)
    other.run_json(env=other.env(PIPEKIT_SHELL="always"))
    via_sh = outputs(other.root)
    assert direct.keys() == via_sh.keys()
    for name in direct:
        if name == "env.txt":
            assert "PIPEKIT_TEST_VAR=from params" in direct[name]
            assert env_lines(direct[name], project.root) == env_lines(via_sh[name], other.root)
        else:
            assert direct[name] == via_sh[name], name
    assert direct["upper.txt"] == "HELLO WORLD\nSECOND LINE\n"
    assert direct["both.txt"] == "hello world\nsecond line\nmore\n"
    assert direct["s.txt"] == "from a script without a shebang\n"


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_failures_read_the_same_with_and_without_the_shell(project: Project, mode: str) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "missing",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["a.txt"],
                "params": {"cmd": "no-such-program-pipekit < {input} > {output}"},
            },
            {
                "name": "noinput",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["b.txt"],
                "params": {"cmd": "cat < no-such-file > {output}"},
            },
            {
                "name": "exit3",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["c.txt"],
                "params": {"cmd": "grep nothing-matches {input} > {output}"},
            },
        ]
    )
    summary = project.run_json("--keep-going", expect=1, env=project.env(PIPEKIT_SHELL=mode))
    by = run_record(project, summary)
    assert by["missing"]["info"]["exit_code"] == 127
    assert "not found" in by["missing"]["info"]["stderr"]
    assert by["noinput"]["info"]["exit_code"] == 2
    assert "no-such-file" in by["noinput"]["info"]["stderr"]
    assert by["exit3"]["info"]["exit_code"] == 1
    assert "exit code 1" in by["exit3"]["error"]
    for name in ("a.txt", "b.txt", "c.txt"):
        assert not (project.root / name).exists()


def test_a_bad_pipekit_shell_value_fails_the_stage_in_words(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": "cat {input} > {output}"},
            }
        ]
    )
    summary = project.run_json(expect=1, env=project.env(PIPEKIT_SHELL="sometimes"))
    assert "PIPEKIT_SHELL must be 'auto' or 'always'" in summary["stages"][0]["reason"]


def test_a_command_started_without_the_shell_gets_what_popen_gave_it(
    project: Project, tmp_path: Path
) -> None:
    """As subprocess.Popen gives it: a session of its own, /dev/null on
    stdin and SIGPIPE and SIGXFSZ at their defaults (Python ignores both,
    and an ignored signal stays ignored across exec); its stdout goes to
    pipekit's stderr. From another folder (``-f``) the same."""
    project.write("in.txt", "x\n")
    stages = [
        {
            "name": "stat",
            "uses": "shell",
            "inputs": ["in.txt"],
            "outputs": ["stat.txt"],
            "params": {"cmd": "cat /proc/self/stat > {output}"},
        },
        {
            "name": "status",
            "uses": "shell",
            "inputs": ["in.txt"],
            "outputs": ["status.txt"],
            "params": {"cmd": "grep -E '^Sig(Ign|Blk)' /proc/self/status > {output}"},
        },
        {
            "name": "stdin",
            "uses": "shell",
            "inputs": ["in.txt"],
            "outputs": ["stdin.txt"],
            "params": {"cmd": "readlink /proc/self/fd/0 > {output}"},
        },
        {
            "name": "stdout",
            "uses": "shell",
            "inputs": ["in.txt"],
            "outputs": ["o.txt"],
            "params": {"cmd": "cp -v {input} {output}"},
        },
    ]
    project.pipeline(stages)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd in (project.root, elsewhere):
        for f in ("stat.txt", "status.txt", "stdin.txt", "o.txt"):
            (project.root / f).unlink(missing_ok=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipekit",
                "run",
                "--json",
                "--force",
                "all",
                "-f",
                str(project.root / "pipekit.toml"),
            ],
            cwd=cwd,
            env=project.env(PIPEKIT_SHELL="auto"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert {s["status"] for s in summary["stages"]} == {"ok"}
        assert all(s["info"].get("shell") is False for s in run_record(project, summary).values())
        fields = (project.root / "stat.txt").read_text().rsplit(")", 1)[1].split()
        pid, session = int((project.root / "stat.txt").read_text().split()[0]), int(fields[3])
        assert session == pid, "a session of its own"
        masks = dict(
            line.split(":") for line in (project.root / "status.txt").read_text().splitlines()
        )
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            assert not int(masks["SigIgn"], 16) & (1 << (sig - 1)), (sig, masks)
        assert (project.root / "stdin.txt").read_text().strip() == "/dev/null"
        assert "->" in proc.stderr and "->" not in proc.stdout  # cp -v's line

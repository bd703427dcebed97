"""Shared fixtures: a project folder with a pipeline, and ways to run pipekit
on it for real (a subprocess running the installed CLI) or in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redisfix import own_redis_server, redis_server, redis_server_session  # noqa: F401

HELPERS = Path(__file__).parent / "helpers"


def write_toml(path: Path, doc: dict[str, Any]) -> None:
    """Write a pipeline dict as TOML (enough of TOML for our schema)."""
    lines: list[str] = []

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    for k, v in doc.items():
        if k != "stages":
            lines.append(f"{k} = {val(v)}")
    for st in doc.get("stages", []):
        lines.append("")
        lines.append("[[stages]]")
        for k, v in st.items():
            lines.append(f"{k} = {val(v)}")
    path.write_text("\n".join(lines) + "\n")


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "pipekit.toml"

    def write(self, rel: str, text: str | bytes, *, age: float = 10.0) -> Path:
        """Write a file; by default backdate it so its hash can be cached
        (a file changed within the last 2 s is always re-read)."""
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str):
            p.write_text(text)
        else:
            p.write_bytes(text)
        if age:
            t = time.time() - age
            os.utime(p, (t, t))
        return p

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def pipeline(self, stages: list[dict[str, Any]], **top: Any) -> Path:
        write_toml(self.file, {**top, "stages": stages})
        return self.file

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PIPEKIT_PLUGIN_MODULES"] = "pipekit_testplugin"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HELPERS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env.pop("PIPEKIT_DISABLE_PLUGINS", None)
        env["PIPEKIT_CACHE_DIR"] = str(self.root.parent / "cache")
        env.update(extra)
        return env

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipekit", *args],
            cwd=self.root,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(
        self, *args: str, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipekit", *args],
            cwd=self.root,
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )

    def run_json(
        self, *args: str, expect: int = 0, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        proc = self.cli("run", "--json", *args, env=env)
        assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        return json.loads(proc.stdout)

    def statuses(self, summary: dict[str, Any]) -> dict[str, str]:
        return {s["name"]: s["status"] for s in summary["stages"]}

    def reasons(self, summary: dict[str, Any]) -> dict[str, str]:
        return {s["name"]: s["reason"] for s in summary["stages"]}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    root.mkdir()
    return Project(root)


@pytest.fixture(autouse=True)
def _test_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests see the test plugin module too."""
    monkeypatch.syspath_prepend(str(HELPERS))
    monkeypatch.setenv("PIPEKIT_PLUGIN_MODULES", "pipekit_testplugin")
    monkeypatch.delenv("PIPEKIT_DISABLE_PLUGINS", raising=False)


REAL_REDIS_FIXTURES = {"redis_server", "own_redis_server", "redis_server_session"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_server: uses a real redis-server started by the tests (auto-applied)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real redis-server, by a fixture or by a
    parameter named "redis" (``-m redis_server`` selects them, ``-m "not
    redis_server"`` leaves them out)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        if names & REAL_REDIS_FIXTURES or "redis" in params:
            item.add_marker(pytest.mark.redis_server)

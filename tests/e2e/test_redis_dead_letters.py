"""Dead letters of a record stage on the redis backend, through the real
CLI: they live in Redis (a runner in another working folder sees them), and
``pipekit dlq`` lists and purges them there. Skipped where this tree has no
``pipekit dlq`` yet (it comes with the record-stage issue)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Project
from pipekit.cli._commands import COMMANDS
from redisfix import RedisServer

if "dlq" not in COMMANDS:
    pytest.skip("this tree has no `pipekit dlq` yet", allow_module_level=True)


def setup(root: Path, url: str) -> Project:
    root.mkdir()
    p = Project(root)
    p.pipeline(
        [
            {
                "name": "clean",
                "uses": "record-boom",
                "inputs": ["../shared/in.txt"],
                "outputs": ["../shared/out.txt"],
                "max_failures": 5,
                "record_retry": {"attempts": 2, "backoff": 0.0, "jitter": 0.0},
            }
        ],
        name="dl",
        backend={"name": "redis", "options": {"url": url, "prefix": "dl:"}},
    )
    return p


def test_dead_letters_live_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("a\nboom 1\nb\nboom 2\n")
    one = setup(tmp_path / "one", redis_server.url)
    two = setup(tmp_path / "two", redis_server.url)
    summary = one.run_json()
    assert summary["stages"][0]["status"] == "ok", summary
    assert (shared / "out.txt").read_text() == "a\nb\n"
    listed = two.cli("dlq", "list", "--json")  # another machine, as it were
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)["letters"]
    assert [x["record"] for x in letters] == ["boom 1", "boom 2"]
    assert all(x["stage"] == "clean" and x["error_type"] == "ValueError" for x in letters)
    assert not list(one.root.glob(".pipekit/*.sqlite"))  # not in the local state
    c = redis_server.client()
    assert any(k.startswith(b"dl:dlq:") for k in c.keys())
    shown = two.cli("dlq", "show", str(letters[0]["id"]))
    assert shown.returncode == 0 and "boom 1" in shown.stdout, shown.stderr
    purged = one.cli("dlq", "purge", "--json")
    assert purged.returncode == 0 and json.loads(purged.stdout)["purged"] == 2, purged.stderr
    assert json.loads(two.cli("dlq", "list", "--json").stdout)["letters"] == []

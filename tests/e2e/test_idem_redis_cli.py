"""`pipekit idem` on the Redis backend (issue 20, "Smaller"): it works from
--backend alone, without a pipeline file (as `pipekit doctor` does), says
which Redis it read rather than printing an object's repr, and escapes
what a terminal would act on in keys."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Project
from pipekit import IdempotencyManager
from redisfix import RedisServer, real_connection


def _records(server: RedisServer) -> IdempotencyManager:
    from pipekit_redis.idempotency import RedisIdempotencyStore

    manager = IdempotencyManager(RedisIdempotencyStore(real_connection(server)))
    manager.complete(manager.begin("orders/42", "fp"), {"total": 7})
    manager.complete(manager.begin("evil\x1b]0;pwned\x07", "fp"), 1)
    return manager


def test_idem_with_backend_redis_needs_no_pipeline_file(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    _records(redis_server)
    project = Project(tmp_path)  # an empty folder: no pipeline file
    env = project.env(PIPEKIT_REDIS_URL=redis_server.url)

    listed = project.cli("idem", "list", "--backend", "redis", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "orders/42" in listed.stdout
    assert "object at 0x" not in listed.stdout
    assert f"Redis at {redis_server.url}" in listed.stdout
    assert "\x1b" not in listed.stdout and "evil\\x1b]0;pwned\\x07" in listed.stdout

    shown = project.cli("idem", "show", "orders/42", "--backend", "redis", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["result"] == {"total": 7}


def test_idem_with_an_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    project = Project(tmp_path)
    proc = project.cli("idem", "list", "--backend", "nosuch")
    assert proc.returncode == 2, proc.stderr
    assert "nosuch" in proc.stderr and "Traceback" not in proc.stderr

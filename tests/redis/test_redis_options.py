"""The redis backend's options and connection errors, in process and through
the real CLI: strict options, URLs never printed with their password,
unreachable Redis at start is exit 2."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import Project
from redisfix import free_port, need_modules


@pytest.fixture(autouse=True)
def _needs_package() -> None:
    need_modules("redis", "pipekit_redis")


def parse(options: dict, environ: dict | None = None):
    from pipekit_redis.options import parse_options

    return parse_options(options, environ=environ or {})


def test_defaults_and_env() -> None:
    from pipekit_redis.options import DEFAULT_URL

    assert parse({}).url == DEFAULT_URL
    assert parse({}, {"PIPEKIT_REDIS_URL": "redis://h:1/2"}).url == "redis://h:1/2"
    # the pipeline's own url wins over the environment
    assert parse({"url": "redis://a/0"}, {"PIPEKIT_REDIS_URL": "redis://b/0"}).url == "redis://a/0"
    o = parse(
        {"prefix": "x:", "lock_ttl": 5, "socket_timeout": 1, "retries": 0, "chunk_size": 2048}
    )
    assert (o.prefix, o.lock_ttl, o.socket_timeout, o.retries, o.chunk_size) == (
        "x:",
        5.0,
        1.0,
        0,
        2048,
    )
    # a restart of 10 s and more is waited out by default (issue 20 item 7)
    assert (parse({}).retry_budget, parse({}).retries) == (30.0, None)
    assert parse({"retry_budget": 90}).retry_budget == 90.0


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"urll": "redis://h/0"}, ["unknown option 'urll'", "did you mean 'url'"]),
        ({"lock_ttl": 0}, ["'lock_ttl'", "positive"]),
        ({"lock_ttl": "5"}, ["'lock_ttl'", "positive"]),
        ({"retries": -1}, ["'retries'"]),
        ({"retries": True}, ["'retries'"]),
        ({"retry_budget": 0}, ["'retry_budget'", "positive"]),
        ({"retry_budget": float("nan")}, ["'retry_budget'", "finite"]),
        ({"retry_budget": float("inf")}, ["'retry_budget'", "finite"]),
        ({"lock_ttl": float("nan")}, ["'lock_ttl'", "finite"]),
        ({"chunk_size": 10}, ["'chunk_size'", "1024"]),
        ({"prefix": 3}, ["'prefix'"]),
        ({"url": "http://h/0"}, ["redis://", "rediss://"]),
        ({"url": "redis://h:notaport/0"}, ["not a valid URL"]),
        ({"url": "redis://h/db"}, ["database must be a number"]),
        ({"url": ""}, ["non-empty"]),
    ],
)
def test_bad_options_name_the_option(options: dict, words: list[str]) -> None:
    from pipekit.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse(options)
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host/0", "redis://user:***@host/0"),
        ("rediss://s3cret@host/0", "rediss://***@host/0"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_urls_are_shown_without_password(url: str, shown: str) -> None:
    from pipekit_redis.options import redact_url

    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_bad_url_message_hides_the_password() -> None:
    from pipekit.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse({"url": "redis://:s3cret@host:port/0"})
    assert "s3cret" not in str(info.value)


def redis_pipeline(project: Project, options: dict) -> None:
    project.write("in.txt", "a\n")
    project.pipeline(
        [{"name": "up", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}],
        backend={"name": "redis", "options": options},
    )


def test_unreachable_redis_at_start_is_exit_2(project: Project) -> None:
    port = free_port()  # nothing listens there
    redis_pipeline(project, {"url": f"redis://:s3cret@127.0.0.1:{port}/0", "retries": 1})
    for command in (["run"], ["status"]):
        proc = project.cli(*command)
        assert proc.returncode == 2, (command, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert f"redis://:***@127.0.0.1:{port}/0" in proc.stderr, proc.stderr
        assert "unreachable" in proc.stderr
        assert "s3cret" not in proc.stderr + proc.stdout
    assert not (project.root / "out.txt").exists()


def test_unknown_option_is_a_config_error(project: Project) -> None:
    redis_pipeline(project, {"url": "redis://127.0.0.1:1/0", "lock-ttl": 5})
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "unknown option 'lock-ttl' of the redis backend" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_url_from_the_environment(project: Project, redis_server) -> None:
    redis_pipeline(project, {"prefix": "envurl:"})
    summary = project.run_json(env=project.env(PIPEKIT_REDIS_URL=redis_server.url))
    assert summary["status"] == "ok"
    c = redis_server.client()
    assert any(k.startswith(b"envurl:idem:") for k in c.keys())


def test_prefixes_keep_pipelines_apart(tmp_path, redis_server) -> None:
    """Two projects with one pipeline name, two prefixes: neither sees the other's records."""
    summaries = []
    for name in ("one", "two"):
        root = tmp_path / name
        root.mkdir()
        p = Project(root)
        p.write("in.txt", "a\n")
        p.pipeline(
            [{"name": "up", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}],
            name="same",
            backend={"name": "redis", "options": {"url": redis_server.url, "prefix": f"{name}:"}},
        )
        summaries.append(p.run_json())
    assert [s["stages"][0]["status"] for s in summaries] == ["ok", "ok"]
    prefixes = Counter(k.decode().split(":")[0] for k in redis_server.client().keys())
    assert set(prefixes) == {"one", "two"} and prefixes["one"] == prefixes["two"], prefixes


def test_doctor_reports_and_exits(project: Project, redis_server, tmp_path) -> None:
    redis_pipeline(project, {"url": redis_server.url})
    proc = project.cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert doc["backend"] == "redis" and doc["status"] == "warn"
    assert checks["persistence"]["status"] == "warn"  # the test server keeps nothing
    assert "no persistence" in checks["persistence"]["message"]
    for name in ("connection", "server", "scripts", "locks", "idempotency records", "checkpoints"):
        assert checks[name]["status"] == "ok", checks[name]
    assert not [k for k in redis_server.client().keys() if b"doctor" in k]  # it cleans up
    text = project.cli("doctor")
    assert text.returncode == 0 and "warn  persistence" in text.stdout, text.stdout


def test_doctor_on_a_persistent_server(project: Project, own_redis_server) -> None:
    redis_pipeline(project, {"url": own_redis_server.url})
    doc = json.loads(project.cli("doctor", "--json").stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["persistence"]["status"] == "ok", checks["persistence"]
    assert "appendfsync always" in checks["persistence"]["message"]
    assert doc["status"] == "ok"


def test_doctor_unreachable(tmp_path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    p = Project(root)  # no pipeline file: --backend and the environment
    port = free_port()
    env = p.env(PIPEKIT_REDIS_URL=f"redis://:s3cret@127.0.0.1:{port}/0")
    proc = p.cli("doctor", "--backend", "redis", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "fail"
    assert [c["name"] for c in doc["checks"]] == ["connection"]
    assert "s3cret" not in proc.stdout + proc.stderr
    assert f"127.0.0.1:{port}" in doc["checks"][0]["message"]


def test_doctor_file_backend(project: Project) -> None:
    project.pipeline([{"name": "up", "uses": "upper", "inputs": ["in.txt"], "outputs": ["o"]}])
    project.write("in.txt", "a\n")
    proc = project.cli("doctor")
    assert proc.returncode == 0, proc.stderr
    assert "backend file:" in proc.stdout and "ok    locks" in proc.stdout
    assert not (project.root / ".pipekit").exists()  # doctor creates nothing

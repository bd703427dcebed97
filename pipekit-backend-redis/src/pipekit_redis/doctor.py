"""``pipekit doctor --backend redis``: can pipekit work with this Redis, and
would it lose records on a restart?

Server checks (connection, version, mode, persistence, eviction, scripts)
run once per connection; each backend kind adds a round trip of its own
(take and release a lock, claim and delete a record, save, load and delete
a checkpoint) under a key of its own that is removed afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from pipekit.stores import FAIL, OK, WARN, Check

from .connection import RedisConnection

__all__ = ["checks", "MIN_VERSION"]

MIN_VERSION = (6, 2)
"""``SET ... PXAT`` and ``PEXPIREAT`` semantics pipekit relies on."""

_server_cache: dict[int, list[Check]] = {}


def _version(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _config(client: Any, name: str) -> str | None:
    """A server setting, or None where CONFIG is not allowed (managed Redis)."""
    try:
        got = client.config_get(name)
    except Exception:
        return None
    value = got.get(name)
    if isinstance(value, bytes):
        value = value.decode()
    return None if value is None else str(value)


def server_checks(conn: RedisConnection) -> list[Check]:
    cached = _server_cache.get(id(conn))
    if cached is not None:
        return cached
    out: list[Check] = []
    where = conn.options.safe_url
    try:
        conn._checked = False
        conn.connect()
    except Exception as exc:
        out.append(Check("connection", FAIL, str(exc)))
        _server_cache[id(conn)] = out
        return out
    client = conn.client
    t0 = time.perf_counter()
    try:
        client.ping()
    except Exception:
        pass
    rtt = (time.perf_counter() - t0) * 1000
    out.append(Check("connection", OK, f"{where} answers PING ({rtt:.2f} ms)"))
    try:
        info = client.info()
    except Exception as exc:
        out.append(Check("server", WARN, f"INFO is not allowed ({exc}); cannot check the server"))
        _server_cache[id(conn)] = out
        return out
    version = str(info.get("redis_version", "?"))
    if version != "?" and _version(version) < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        out.append(Check("server", FAIL, f"Redis {version}; pipekit needs Redis {need} or later"))
    else:
        mode = info.get("redis_mode", "standalone")
        out.append(Check("server", OK, f"Redis {version} ({mode})"))
    if str(info.get("cluster_enabled", "0")) == "1":
        out.append(
            Check(
                "mode",
                FAIL,
                "Redis Cluster is not supported (pipekit's scripts touch keys of one "
                "pipeline in several slots); use a standalone server or a primary with replicas",
            )
        )
    if info.get("role") not in (None, "master"):
        out.append(
            Check("mode", FAIL, f"this server is a {info.get('role')}: read-only; use the primary")
        )
    out.append(_persistence(client, info))
    out.append(_eviction(client, info))
    try:
        conn._load(client)
        out.append(Check("scripts", OK, "Lua scripts load (EVALSHA allowed)"))
    except Exception as exc:
        out.append(Check("scripts", FAIL, f"cannot load Lua scripts: {exc}"))
    _server_cache[id(conn)] = out
    return out


def _persistence(client: Any, info: dict[str, Any]) -> Check:
    lost = "committed stages then run again; dead letters and checkpoints are lost"
    fix = "Set appendonly yes (with appendfsync everysec or always)"
    aof = str(info.get("aof_enabled", "0")) == "1"
    if aof:
        fsync = _config(client, "appendfsync")
        if fsync == "always":
            return Check(
                "persistence", OK, "AOF on, appendfsync always: nothing acknowledged is lost"
            )
        if fsync == "no":
            return Check(
                "persistence",
                WARN,
                "AOF on but appendfsync no: the OS decides when writes reach the disk, so a "
                f"power loss can lose the last ~30 s of writes ({lost}). "
                "Set appendfsync everysec or always",
            )
        return Check(
            "persistence",
            OK,
            f"AOF on, appendfsync {fsync or 'everysec (assumed)'}: a restart loses nothing; "
            "a power loss of the machine can lose the last second",
        )
    save = _config(client, "save")
    if save:
        return Check(
            "persistence",
            WARN,
            f"only RDB snapshots (save {save!r}): a restart loses every write since the last "
            f"snapshot ({lost}). {fix}",
        )
    if save is None:
        return Check(
            "persistence",
            WARN,
            "AOF is off and the snapshot rules cannot be read (CONFIG is not allowed): unless "
            f"the server keeps snapshots, a restart loses every record ({lost}). {fix}",
        )
    return Check(
        "persistence",
        WARN,
        "no persistence (appendonly no, no save rules): a restart of Redis loses every "
        f"record, lock counter, checkpoint and dead letter ({lost}). {fix}",
    )


def _eviction(client: Any, info: dict[str, Any]) -> Check:
    maxmemory = int(info.get("maxmemory", 0) or 0)
    policy = str(info.get("maxmemory_policy", _config(client, "maxmemory-policy") or "noeviction"))
    if maxmemory == 0 or policy == "noeviction":
        limit = "no memory limit" if maxmemory == 0 else f"maxmemory {maxmemory} bytes"
        return Check("eviction", OK, f"{limit}, policy {policy}: keys are never evicted")
    return Check(
        "eviction",
        WARN,
        f"maxmemory {maxmemory} bytes with policy {policy}: under memory pressure Redis "
        "evicts keys, which loses records (stages run again) and locks (their holders "
        "fail to commit); set maxmemory-policy noeviction",
    )


def _kind_check(conn: RedisConnection, kind: str) -> Check:
    tag = f"doctor/{os.uname().nodename}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
    try:
        if kind == "locks":
            from .lock import RedisLockBackend

            lease = RedisLockBackend(conn, 5.0).lock(tag)
            t0 = time.perf_counter()
            if not lease.acquire(timeout=0):
                return Check("locks", FAIL, "could not take a fresh lock")
            lease.release()
            ms = (time.perf_counter() - t0) * 1000
            conn.call(lambda c: c.delete(conn.key("fence", tag)), "cleaning up")
            return Check("locks", OK, f"lock taken and released ({ms:.1f} ms, token {lease.token})")
        if kind == "idempotency":
            from pipekit.stores import IdemRecord

            from .idempotency import RedisIdempotencyStore

            store = RedisIdempotencyStore(conn)
            rec = IdemRecord(tag, "PENDING", "doctor", owner="doctor", expires=time.time() + 60)
            t0 = time.perf_counter()
            if store.create(rec) is not None or store.get(tag) is None:
                return Check("idempotency records", FAIL, "a record written could not be read")
            store.delete(tag)
            ms = (time.perf_counter() - t0) * 1000
            return Check("idempotency records", OK, f"record written, read, deleted ({ms:.1f} ms)")
        from .checkpoint import RedisCheckpointStore

        cps = RedisCheckpointStore(conn)
        blob = os.urandom(cps.chunk_size + 100)
        ns = tag.replace("/", ".")
        t0 = time.perf_counter()
        cps.put(ns, "doctor", blob)
        back = cps.get(ns, "doctor")
        cps.delete(ns, "doctor")
        ms = (time.perf_counter() - t0) * 1000
        if back != blob:
            return Check("checkpoints", FAIL, "a checkpoint saved could not be loaded back intact")
        return Check(
            "checkpoints", OK, f"{len(blob)} bytes in 2 chunks saved, loaded, deleted ({ms:.1f} ms)"
        )
    except Exception as exc:
        name = {"locks": "locks", "idempotency": "idempotency records"}.get(kind, "checkpoints")
        return Check(name, FAIL, f"{type(exc).__name__}: {exc}")


def checks(conn: RedisConnection, kind: str) -> list[Check]:
    out = list(server_checks(conn))
    if any(c.status == FAIL for c in out):
        return out
    return [*out, _kind_check(conn, kind)]

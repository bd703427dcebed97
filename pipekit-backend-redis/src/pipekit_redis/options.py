"""The ``[backend].options`` of the ``redis`` backend, checked strictly (an
unknown or mistyped option is a config error naming it), and the URL shown
without its password wherever it is printed."""

from __future__ import annotations

import difflib
import math
import os
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
from pipekit.errors import ConfigError

__all__ = ["URL_ENV", "DEFAULT_URL", "RedisOptions", "parse_options", "redact_url"]

URL_ENV = "PIPEKIT_REDIS_URL"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
SCHEMES = ("redis", "rediss", "unix")


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` query
    parameter) replaced by ``***``; never fails."""
    try:
        parts = urlsplit(url)
        out = url
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            # redis://secret@host: redis-py takes a lone userinfo as the password
            user = userinfo.split(":", 1)[0] + ":" if ":" in userinfo else ""
            hidden = f"{user}***@{host}"
            out = out.replace("//" + netloc, "//" + hidden, 1)
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            if any(k.lower() == "password" for k, _ in pairs):
                pairs = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
                out = out.replace("?" + parts.query, "?" + urlencode(pairs, safe="*/"), 1)
        return out
    except Exception:
        return "<a URL that cannot be parsed>"


def _positive(name: str, value: Any, *, integer: bool = False) -> Any:
    wrong_kind = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if wrong_kind or not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
        what = "a positive integer" if integer else "a positive, finite number"
        raise ConfigError(f"backend option {name!r} must be {what}, got {value!r}")
    return value


@attrs.frozen
class RedisOptions:
    """The options of the ``redis`` backend (see docs/backends.md)."""

    url: str = DEFAULT_URL
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS,
    or ``unix:///path/to/socket``. Default: ``$PIPEKIT_REDIS_URL``, else
    ``redis://127.0.0.1:6379/0``."""
    prefix: str = "pipekit:"
    """Put before every key pipekit writes, so that several pipelines (or
    environments) can share one Redis database."""
    lock_ttl: float | None = None
    """Seconds a stage lease lives without renewal (default: the runner's,
    60). A renewal thread extends it every third of it while the stage works."""
    socket_timeout: float = 10.0
    """Seconds to wait for a reply before the command counts as failed."""
    connect_timeout: float = 5.0
    """Seconds to wait for a connection."""
    retry_budget: float = 30.0
    """Seconds for which a command is retried after a connection error or
    timeout, with exponential backoff (every command pipekit sends is safe
    to repeat): a Redis that restarts within this time is waited out."""
    retries: int | None = None
    """At most this many retries of a command, within ``retry_budget``
    (None: as many as the budget allows)."""
    chunk_size: int = 512 * 1024
    """Checkpoint blobs are stored in chunks of at most this many bytes."""

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


_FIELDS = {a.name for a in attrs.fields(RedisOptions)}


def parse_options(
    options: dict[str, Any], *, environ: dict[str, str] | None = None
) -> RedisOptions:
    """Structure and check ``options``; a problem is a :class:`ConfigError`
    that names the option (and never shows a password)."""
    env = os.environ if environ is None else environ
    unknown = sorted(set(options) - _FIELDS)
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, sorted(_FIELDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown option {name!r} of the redis backend{hint}; "
            f"options: {', '.join(sorted(_FIELDS))}"
        )
    values = dict(options)
    if "url" not in values and env.get(URL_ENV):
        values["url"] = env[URL_ENV]
    url = values.get("url", DEFAULT_URL)
    if not isinstance(url, str) or not url:
        raise ConfigError(
            f"backend option 'url' must be a non-empty string, got {type(url).__name__}"
        )
    _check_url(url)
    prefix = values.get("prefix", "pipekit:")
    if not isinstance(prefix, str):
        raise ConfigError(f"backend option 'prefix' must be a string, got {prefix!r}")
    if values.get("lock_ttl") is not None:
        _positive("lock_ttl", values["lock_ttl"])
    for name in ("socket_timeout", "connect_timeout"):
        if name in values:
            _positive(name, values[name])
    retries = values.get("retries")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise ConfigError(f"backend option 'retries' must be an integer >= 0, got {retries!r}")
    if "retry_budget" in values:
        _positive("retry_budget", values["retry_budget"])
    chunk = values.get("chunk_size", 512 * 1024)
    _positive("chunk_size", chunk, integer=True)
    if not 1024 <= chunk <= 256 * 1024 * 1024:
        raise ConfigError(
            f"backend option 'chunk_size' must be from 1024 to {256 * 1024 * 1024} bytes, got {chunk}"
        )
    for name in ("lock_ttl", "socket_timeout", "connect_timeout", "retry_budget"):
        if values.get(name) is not None:
            values[name] = float(values[name])
    values["url"] = url
    return RedisOptions(**values)


def _check_url(url: str) -> None:
    where = URL_ENV if url == os.environ.get(URL_ENV) else "backend option 'url'"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"{where}: {redact_url(url)} is not a valid URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"{where}: {redact_url(url)} must start with redis:// (or rediss:// for TLS, "
            "unix:// for a socket)"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"{where}: {redact_url(url)} names no socket path")
        return
    if not parts.hostname:
        raise ConfigError(f"{where}: {redact_url(url)} names no host")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(f"{where}: {redact_url(url)}: the database must be a number, got {db!r}")
    del port

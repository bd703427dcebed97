"""A static scan of processors for network use (``pipekit check``).

Reads the source of each processor's module, and of the modules of its own
package that it imports (transitively), with :mod:`ast`; nothing is run.
It reports

- imports of network modules (``socket``, ``urllib.request``, ``requests``,
  ...), including ``importlib.import_module("...")`` and ``__import__``
  with a literal name;
- imports of modules that start programs (``subprocess``, ``os.system``
  and friends are not imports, so only the module is named): at run time
  the guard refuses a program not started through
  :func:`pipekit.isolate_command`, which the scan cannot tell;
- URLs in a stage's params, and known network programs (``curl``,
  ``wget``, ``ssh``, ...) in a processor's command params.

Third-party libraries that a processor imports are not scanned: most of
them import ``socket`` or ``urllib`` somewhere, and the run-time guard is
what watches them.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Finding", "NETWORK_MODULES", "scan_processor", "scan_params"]

# Module (or dotted prefix) -> what it is. A dotted entry names only that
# submodule: ``urllib.parse`` is no network use, ``urllib.request`` is.
NETWORK_MODULES = {
    "socket": "sockets",
    "ssl": "TLS sockets",
    "socketserver": "network servers",
    "asyncio.streams": "asyncio network streams",
    "http.client": "HTTP client",
    "http.server": "HTTP server",
    "urllib.request": "URL fetching",
    "xmlrpc.client": "XML-RPC client",
    "xmlrpc.server": "XML-RPC server",
    "ftplib": "FTP client",
    "smtplib": "SMTP client",
    "poplib": "POP3 client",
    "imaplib": "IMAP client",
    "nntplib": "NNTP client",
    "telnetlib": "Telnet client",
    "urllib3": "HTTP client",
    "requests": "HTTP client",
    "httpx": "HTTP client",
    "aiohttp": "HTTP client/server",
    "httplib2": "HTTP client",
    "pycurl": "libcurl",
    "websocket": "WebSocket client",
    "websockets": "WebSockets",
    "grpc": "gRPC",
    "paramiko": "SSH client",
    "fabric": "SSH",
    "boto3": "AWS client",
    "botocore": "AWS client",
    "google.cloud": "Google Cloud client",
    "azure": "Azure client",
    "redis": "Redis client",
    "pymongo": "MongoDB client",
    "psycopg": "PostgreSQL client",
    "psycopg2": "PostgreSQL client",
    "asyncpg": "PostgreSQL client",
    "pymysql": "MySQL client",
    "MySQLdb": "MySQL client",
    "kafka": "Kafka client",
    "confluent_kafka": "Kafka client",
    "pika": "AMQP client",
    "paho": "MQTT client",
    "nats": "NATS client",
    "zmq": "ZeroMQ",
    "dns": "DNS client",
    "twisted": "network framework",
    "tornado": "network framework",
    "smbclient": "SMB client",
}

PROGRAM_MODULES = {
    "subprocess": "starts programs",
    "multiprocessing": "starts processes",
    "pty": "starts programs",
}

NETWORK_PROGRAMS = tuple(
    """curl wget ssh scp sftp rsync nc ncat netcat telnet ftp aws gsutil gcloud az kubectl
    docker psql mysql redis-cli mongo mongosh git pip npm apt-get apt ping dig nslookup
    host""".split()  # noqa: SIM905 (a list of words)
)

URL_RE = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^/\s'\"{}]*)", re.I)
_LOCAL_HOSTS = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$", re.I)


@attrs.define
class Finding:
    """One thing the scan found."""

    kind: str
    """``network`` (counts against a guarded stage) or ``program`` / ``note``."""
    what: str
    """What was found, e.g. ``imports requests (HTTP client)``."""
    file: str | None = None
    line: int | None = None


def _classify(module: str) -> tuple[str, str] | None:
    """(kind, label) of an imported module name, or None."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in NETWORK_MODULES:
            return "network", NETWORK_MODULES[prefix]
        if prefix in PROGRAM_MODULES:
            return "program", PROGRAM_MODULES[prefix]
    return None


def _resolve(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of a ``from ... import``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(tree: ast.AST, package: str) -> Iterator[tuple[str, int]]:
    """Every (module, line) the source imports; ``from X import Y`` gives
    both X and X.Y (Y may be a submodule)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            yield base, node.lineno
            for alias in node.names:
                if alias.name != "*":
                    yield f"{base}.{alias.name}" if base else alias.name, node.lineno
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            value = getattr(node.args[0], "value", None) if node.args else None
            if name in ("import_module", "__import__") and isinstance(value, str):
                yield value, node.lineno  # a literal name


def _module_file(name: str) -> Path | None:
    path = getattr(sys.modules.get(name), "__file__", None)
    if path is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None else None
    return Path(path) if path and str(path).endswith(".py") else None


def scan_processor(processor: Any) -> tuple[str | None, list[Finding]]:
    """(the processor's source file, findings) for one processor: its own
    module and the modules of its top-level package that it imports."""
    cls = type(processor)
    try:
        first = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        first = None
    if first is None:
        return None, [Finding("note", "no Python source to scan (a built-in or compiled class)")]
    root_pkg = cls.__module__.split(".")[0]
    todo: list[tuple[str, Path]] = [(cls.__module__, Path(first))]
    seen: set[Path] = set()
    findings: list[Finding] = []
    reported: set[tuple[str, str, int]] = set()
    while todo:
        modname, path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError) as exc:
            findings.append(Finding("note", f"cannot read: {exc}", str(path)))
            continue
        package = modname if path.name == "__init__.py" else modname.rpartition(".")[0]
        isolates = any(
            (isinstance(n, ast.Name) and n.id == "isolate_command")
            or (isinstance(n, ast.Attribute) and n.attr == "isolate_command")
            for n in ast.walk(tree)
        )
        for imported, line in _imports(tree, package):
            found = _classify(imported)
            if found is not None:
                kind, label = found
                if kind == "program" and isolates:
                    kind, label = "note", f"{label} through pipekit.isolate_command"
                key = (str(path), kind, line)  # the module as written, once per line
                if key not in reported:
                    reported.add(key)
                    findings.append(Finding(kind, f"imports {imported} ({label})", str(path), line))
                continue
            if imported.split(".")[0] == root_pkg and imported != modname:
                dep = _module_file(imported)
                if dep is not None and dep not in seen:
                    todo.append((imported, dep))
    findings.sort(key=lambda f: (f.file or "", f.line or 0))
    return first, findings


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def scan_params(params: dict[str, Any], command_params: tuple[str, ...] = ()) -> list[Finding]:
    """URLs to hosts beyond loopback in a stage's params, and network
    programs named in its command params."""
    out: list[Finding] = []
    for where, text in _strings(params, "params"):
        for m in URL_RE.finditer(text):
            scheme, host = m.group(1).lower(), m.group(2)
            if scheme == "file" or _LOCAL_HOSTS.match(host.rpartition("@")[2]):
                continue
            out.append(Finding("network", f"{where} names the URL {m.group(0)}"))
    for name in command_params:
        command = params.get(name)
        if not isinstance(command, str):
            continue
        for program in NETWORK_PROGRAMS:
            if re.search(
                rf"(^|[;&|(`]|\$\(|\bexec\s|\bsudo\s|\benv\s)\s*{re.escape(program)}\b",
                command,
            ):
                out.append(Finding("network", f"params.{name} runs {program}"))
    return out

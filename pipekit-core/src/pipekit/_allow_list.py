"""The allow-list language of ``[network] allow`` (docs/user-guide.md):
``loopback``, an address, a network or a host name, each with an optional
``:PORT``. Parsed here, below the plan (which checks a pipeline's lists at
load) and the guard (which matches connections against them), so that
loading a pipeline does not import the guard's machinery."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["LOOPBACK", "Rule", "ip_of", "parse_rule", "rules_of", "check_allow_list"]

LOOPBACK = "loopback"
"""The allow-list word for 127.0.0.0/8, ::1 and localhost."""


@attrs.frozen
class Rule:
    """One allowed destination: an address or network, or a host name
    (``*.example`` matches its subdomains), with an optional port."""

    text: str
    net: Any = attrs.field(default=None, kw_only=True)
    name: str | None = attrs.field(default=None, kw_only=True)
    suffix: bool = attrs.field(default=False, kw_only=True)
    port: int | None = attrs.field(default=None, kw_only=True)

    def matches_ip(self, ip: Any, port: int | None) -> bool:
        if self.net is None or ip.version != self.net.version or ip not in self.net:
            return False
        return self.port is None or port is None or port == self.port

    def matches_name(self, name: str, port: int | None) -> bool:
        if self.name is None:
            return False
        if not (name.endswith("." + self.name) if self.suffix else name == self.name):
            return False
        return self.port is None or port is None or port == self.port


def ip_of(text: str) -> Any:
    """An IP address, or None when ``text`` is not one (IPv4-mapped IPv6
    addresses count as the IPv4 address; a zone index is dropped)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


def parse_rule(entry: str) -> list[Rule]:
    """The rules of one allow-list entry: ``loopback``, ``10.1.2.3``,
    ``10.1.2.3:5432``, ``[fd00::1]:5432``, ``fd00::1``, ``10.0.0.0/8``,
    ``db.internal``, ``db.internal:5432``, ``*.internal``. Raises
    ``ValueError`` with a message naming the entry."""
    text = entry.strip()
    if text == LOOPBACK:
        return [
            Rule(text, net=ipaddress.ip_network("127.0.0.0/8")),
            Rule(text, net=ipaddress.ip_network("::1/128")),
            Rule(text, name="localhost"),
            Rule(text, name="localhost", suffix=True),
        ]
    if not text:
        raise ValueError("an empty entry; write an address, a network or a host name")
    if "://" in text:
        raise ValueError(f"{entry!r}: write the host (and :PORT), not a URL")
    port: int | None = None
    host = text
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{entry!r}: a '[' without its ']'")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], entry)
        if ip_of(host) is None:
            raise ValueError(f"{entry!r}: {host!r} is not an IPv6 address")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, entry)
    if "/" in host:
        if port is not None:
            raise ValueError(f"{entry!r}: a network takes no port")
        try:
            return [Rule(text, net=ipaddress.ip_network(host, strict=False))]
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not a network: {exc}") from None
    ip = ip_of(host)
    if ip is not None:
        return [Rule(text, net=ipaddress.ip_network(ip), port=port)]
    suffix = host.startswith("*.")
    name = (host[2:] if suffix else host).lower().rstrip(".")
    if not re.fullmatch(
        r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*", name
    ):
        raise ValueError(
            f"{entry!r} is not an address, a network (10.0.0.0/8), a host name "
            "or one of these with :PORT"
        )
    return [Rule(text, name=name, suffix=suffix, port=port)]


@functools.lru_cache(maxsize=512)
def rules_of(entry: str) -> tuple[Rule, ...]:
    """:func:`parse_rule`, once per entry (every stage's policy has one)."""
    return tuple(parse_rule(entry))


def check_allow_list(entries: Sequence[str]) -> list[str]:
    """The problems of an allow list, one message per bad entry."""
    problems = []
    for entry in entries:
        try:
            rules_of(entry)
        except ValueError as exc:
            problems.append(str(exc))
    return problems

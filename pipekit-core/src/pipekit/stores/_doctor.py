"""``pipekit doctor``'s checks: what a backend reports about itself.

A backend object (what a factory returns) may define ``doctor()``, returning
a list of :class:`Check`; core gathers them from the lock backend, the
idempotency store and the checkpoint store (a check with the same name as
an earlier one is not repeated), so the backend-specific knowledge stays in
the backend.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Check", "OK", "WARN", "FAIL", "gather"]

OK = "ok"
WARN = "warn"
FAIL = "fail"


@attrs.define
class Check:
    """One finding. ``status`` is ``ok``, ``warn`` (works, but a risk the
    user should know of) or ``fail`` (pipekit cannot work like this)."""

    name: str
    status: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message}


def gather(backends: Any) -> list[Check]:
    """The checks of every backend object that has ``doctor()``."""
    seen: set[str] = set()
    out: list[Check] = []
    for kind, obj in (
        ("lock backend", backends.locks),
        ("idempotency store", backends.idempotency),
        ("checkpoint store", backends.checkpoints),
    ):
        doctor = getattr(obj, "doctor", None)
        if doctor is None:
            continue
        try:
            found = list(doctor())
        except Exception as exc:  # a broken check must not hide the others
            found = [Check(kind, FAIL, f"its doctor() raised {type(exc).__name__}: {exc}")]
        for check in found:
            if check.name not in seen:
                seen.add(check.name)
                out.append(check)
    return out

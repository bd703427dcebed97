"""``pipekit status`` and ``pipekit run --dry-run``: what would run, and why,
without running or locking anything."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["StageStatus", "plan"]


@attrs.define
class StageStatus:
    name: str
    status: str  # up-to-date | will-run
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reason": self.reason}


def plan(pipeline: Any, evaluator: Any, *, forced: Any = lambda name: False) -> list[StageStatus]:
    out: list[StageStatus] = []
    will_run: set[str] = set()
    for name in pipeline.order:
        st = pipeline.stages[name]
        upstream = [d for d in st.deps if d in will_run]
        if upstream and not forced(name):
            will_run.add(name)
            out.append(StageStatus(name, "will-run", f"upstream stage {upstream[0]!r} will run"))
            continue
        d = evaluator.decide(st, forced=forced(name))
        if d.run:
            will_run.add(name)
            out.append(StageStatus(name, "will-run", d.reason))
        else:
            out.append(StageStatus(name, "up-to-date", d.reason))
    return out

"""What would run, and why, without running or locking anything
(``pipekit status``, ``pipekit run --dry-run``, :func:`pipekit.status`)."""

from __future__ import annotations

from typing import Any

import attrs

from ..plugins._processors import Checkpoint
from ._record_checkpoint import RecordCheckpoint, namespace_for

__all__ = ["StageStatus", "plan", "statuses", "resume_point", "describe_resume"]


@attrs.define
class StageStatus:
    name: str
    status: str  # up-to-date | will-run
    reason: str
    resume: dict[str, Any] | None = None
    """Where a stage that will run resumes from (its checkpoint), if it does."""
    reason_code: str = ""
    """The reason's stable code (see ``pipekit.engine._results.REASON_CODES``)."""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, filter=lambda field, value: value is not None)


def resume_point(store: Any, pipeline: str, stage: str, fingerprint: str) -> dict[str, Any] | None:
    """What a stage's checkpoint for ``fingerprint`` says it will resume
    from, or None when it has none (read only: nothing is deleted)."""
    namespace = namespace_for(pipeline, stage)
    state = RecordCheckpoint(store, namespace, fingerprint).peek()
    if state is not None:
        total = state.get("total_bytes") or 0
        done = state.get("done_bytes") or 0
        return {
            "kind": "records",
            "record": (state.get("counters") or {}).get("records_in", 0),
            "input_fraction": round(done / total, 4) if total else 1.0,
            "saved_at": state.get("saved_at"),
        }
    if Checkpoint(store, namespace, fingerprint).exists():
        return {"kind": "stage"}
    return None


def describe_resume(resume: dict[str, Any]) -> str:
    if resume.get("kind") == "records":
        return (
            f"will resume from record {resume['record']:,} "
            f"(input {resume['input_fraction']:.0%} read)"
        )
    return "will resume from the checkpoint its processor saved"


def plan(
    pipeline: Any,
    evaluator: Any,
    *,
    forced: Any = lambda name: False,
    checkpoints: Any = None,
) -> list[StageStatus]:
    out: list[StageStatus] = []
    will_run: set[str] = set()
    for name in pipeline.order:
        st = pipeline.stages[name]
        upstream = [d for d in st.deps if d in will_run]
        if upstream and not forced(name):
            will_run.add(name)
            why = f"upstream stage {upstream[0]!r} will run"
            out.append(StageStatus(name, "will-run", why, reason_code="upstream_will_run"))
            continue
        d = evaluator.decide(st, forced=forced(name))
        if d.run:
            will_run.add(name)
            resume = None
            if checkpoints is not None and d.fingerprint is not None:
                resume = resume_point(checkpoints, pipeline.name, name, d.fingerprint)
            reason, code = d.reason, d.code
            if resume is not None:
                if reason in ("never run", "last run did not finish"):
                    reason, code = "did not finish", "did_not_finish"
                reason = f"{reason}; {describe_resume(resume)}"
            out.append(StageStatus(name, "will-run", reason, resume, code))
        else:
            out.append(StageStatus(name, "up-to-date", d.reason, reason_code=d.code))
    return out


def statuses(
    pipeline: Any, registry: Any = None, *, forced: Any = lambda name: False
) -> list[StageStatus]:
    """Each stage of ``pipeline``: up to date, or will run and why, from its
    state folder and backend (``registry``: the plugin registry, or None
    for the pipeline's own)."""
    from ..state._hash_cache import HashCache
    from ..state._runner_state import RunnerState, state_file_name
    from ..stores._assemble import make_backends
    from ._decisions import Evaluator

    backends = make_backends(registry, pipeline)
    state = RunnerState(pipeline.state_dir, state_file_name(pipeline.file))
    cache = HashCache(pipeline.state_dir / "hashcache.json")
    evaluator = Evaluator(pipeline, cache, backends.idempotency, state)
    return plan(pipeline, evaluator, forced=forced, checkpoints=backends.checkpoints)

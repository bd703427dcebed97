"""The dead-letter queue above any :class:`DeadLetterStore`: dead letters as
JSON, and ``pipekit dlq retry``, which feeds them back through their
processor and appends what now succeeds to the stage's committed output,
exactly once:

1. under the stage's lock, only when the stage is up to date;
2. old content + appended records go to a durable temp file beside the
   output, hashed on the way;
3. an intent (dead letters, output, new hash) is saved durably in
   ``<state_dir>/dlq-retry/``;
4. the temp file is renamed over the output and the folder made durable;
5. the idempotency record, state entry and hash cache get the new hash, the
   dead letters and the intent are deleted.

A crash between 3 and 5 is finished by the next ``pipekit dlq`` command: if
the output has the intent's hash, step 5 is done; otherwise the intent is
dropped and the dead letters stay queued.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import logging
import os
import random
import time
import traceback
from pathlib import Path
from typing import Any

import attrs

from .. import _json
from .._atomic import (
    atomic_write_bytes,
    fsync_dir,
    move_into_place,
    temp_path_for,
    unlink_quietly,
)
from ..stores._protocols import DeadLetter

__all__ = ["letter_json", "record_text", "StageRetry", "retry_dead_letters", "recover_intents"]
__all__ += ["RETRY_SKIPPED_CODES"]

log = logging.getLogger("pipekit.dlq")
INTENTS = "dlq-retry"


def record_text(letter: DeadLetter) -> str:
    """The record as text for people (bytes that are not UTF-8 escaped)."""
    return letter.record.decode("utf-8", "backslashreplace")


def letter_json(letter: DeadLetter, *, traceback: bool = False) -> dict[str, Any]:
    """A dead letter as JSON: the record as ``record`` (text) when it is
    UTF-8, else ``record`` null and ``record_base64``."""
    out = attrs.asdict(letter)
    try:
        out["record"] = letter.record.decode("utf-8")
    except UnicodeDecodeError:
        out["record"] = None
        out["record_base64"] = base64.b64encode(letter.record).decode()
    if not traceback:
        out.pop("traceback")
    return out


@attrs.define
class StageRetry:
    """What ``dlq retry`` did for one stage."""

    stage: str
    retried: int = 0
    succeeded: int = 0
    still_failing: int = 0
    appended_records: int = 0
    output: str | None = None
    outdated: int = 0
    skipped: str | None = None
    """Why the stage's dead letters were left alone, if they were."""
    skipped_code: str | None = None
    """``skipped`` as a word: one of :data:`RETRY_SKIPPED_CODES`."""
    reason_code: str | None = None
    """With ``not_up_to_date``: the code of the reason the stage would run."""


RETRY_SKIPPED_CODES = {
    "not_in_pipeline": "the stage is no longer in the pipeline",
    "stage_running": "another run holds the stage's lock",
    "not_up_to_date": "the stage would run: `pipekit run` processes its input again",
    "not_a_record_stage": "the stage does not run a record processor any more",
}
"""Why ``pipekit dlq retry`` left a stage's dead letters alone."""


def _digest(path: Path) -> str | None:
    from ..state._hash_cache import hash_file

    try:
        return hash_file(path)
    except FileNotFoundError:
        return None


def _read_intent(path: Path) -> dict[str, Any] | None:
    """A retry's intent; None (the file moved aside, its dead letters stay)
    when it is damaged."""
    from ..state._shapes import check_retry_intent, move_aside, warn_damaged

    try:
        intent = _json.loads(path.read_bytes())
        check_retry_intent(intent)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        warn_damaged(path, why or "not JSON", "moved aside; its dead letters stay queued")
        with contextlib.suppress(FileNotFoundError):
            move_aside(path)
        return None
    return intent  # type: ignore[no-any-return]


def recover_intents(pipeline: Any, backends: Any) -> list[str]:
    """Finish (or drop) the appends of a ``dlq retry`` that was killed;
    return a line per intent found."""
    folder = pipeline.state_dir / INTENTS
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    lines = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = folder / name
        intent = _read_intent(path)
        if intent is None or intent["pipeline"] != pipeline.name:
            continue
        if _digest(Path(intent["path"])) == intent["sha256"]:
            _finish(pipeline, backends, intent)
            lines.append(
                f"finished an interrupted retry of stage {intent['stage']!r}: "
                f"{len(intent['ids'])} dead letter(s) were appended to {intent['output']}"
            )
        else:
            path.unlink(missing_ok=True)
            lines.append(
                f"dropped an interrupted retry of stage {intent['stage']!r}: its output was not "
                "replaced; its dead letters stay queued"
            )
    return lines


def _finish(pipeline: Any, backends: Any, intent: dict[str, Any]) -> None:
    """Steps after the rename: records, state, hash cache, dead letters."""
    from ..state._hash_cache import HashCache
    from ..state._runner_state import RunnerState, state_file_name
    from ..state._shapes import stage_record

    stage, key, digest = intent["stage"], intent["output"], intent["sha256"]
    record = stage_record(backends.idempotency, intent["key"])
    if record is not None and record.status == "SUCCESS":
        result = dict(record.result or {})
        result["outputs"] = dict(result.get("outputs") or {}, **{key: digest})
        result["dlq_retried"] = int(result.get("dlq_retried") or 0) + len(intent["ids"])
        backends.idempotency.put_many(
            [attrs.evolve(record, result=result, token=intent.get("token"), updated=time.time())]
        )
    state = RunnerState(pipeline.state_dir, state_file_name(pipeline.file))
    entry = state.get(stage)
    if entry is not None and entry.get("fingerprint") == intent["fingerprint"]:
        entry = dict(entry, outputs=dict(entry.get("outputs") or {}, **{key: digest}))
        entry["finished_at"] = time.time()
        state.update(stage, entry)
        state.save(pipeline.name)
    cache = HashCache(pipeline.state_dir / "hashcache.json")
    try:
        cache.remember(key, Path(intent["path"]), digest)
        cache.save()
    except FileNotFoundError:
        pass
    backends.dead_letters.delete(pipeline.name, intent["ids"])
    (pipeline.state_dir / INTENTS / f"{intent['stage']}.json").unlink(missing_ok=True)


def _decode(letter: DeadLetter) -> Any:
    if letter.format == "jsonl":
        return _json.loads(letter.record)
    return letter.record.decode("utf-8", "surrogateescape")


def _encode(fmt: str, values: list[Any]) -> bytes:
    out = b""
    for value in values:
        if fmt == "jsonl":
            value = _json.dumps(value)
        elif isinstance(value, str):
            value = value.encode("utf-8", "surrogateescape")
        elif not isinstance(value, bytes):
            kind = type(value).__name__
            raise TypeError(f"a 'lines' processor must yield str or bytes, got {kind}")
        out += value + b"\n"
    return out


def _try(
    processor: Any, letter: DeadLetter, params: Any, policy: Any
) -> tuple[bytes | None, int, BaseException | None]:
    """Run one dead letter through the processor under the record retry
    policy: (encoded outputs or None, tries, last error)."""
    from ..errors import NonRetryable, is_network_refusal

    fatal = (NonRetryable, *tuple(getattr(processor, "non_retryable", ())))
    tries = 0
    error: BaseException | None = None
    while tries < policy.attempts:
        if tries:
            delay = min(policy.max_backoff, policy.backoff * 2 ** (tries - 1))
            time.sleep(delay + (random.uniform(0, policy.jitter) if policy.jitter else 0.0))
        tries += 1
        try:
            record = _decode(letter)
            out = list(processor.iter_process(record, params))
            return _encode(letter.format, out), tries, None
        except Exception as exc:
            error = exc
            if isinstance(exc, (*fatal, _json.JSONDecodeError)) or is_network_refusal(exc):
                break  # retrying cannot help
    return None, tries, error


def retry_dead_letters(
    pipeline: Any,
    backends: Any,
    evaluator: Any,
    *,
    stages: list[str] | None = None,
    lock_timeout: float = 10.0,
) -> list[StageRetry]:
    """Feed the dead letters of ``stages`` (default: every stage that has
    some) back through their processors; append what succeeds to each
    stage's output. See the module's doc for the order of the writes."""
    store = backends.dead_letters
    if stages is None:
        stages = sorted({letter.stage for letter in store.list(pipeline.name)})
    reports = []
    for name in stages:
        report = StageRetry(name)
        reports.append(report)
        letters = store.list(pipeline.name, stage=name)
        if not letters:
            continue
        st = pipeline.stages.get(name)
        if st is None:
            report.skipped = (
                f"stage {name!r} is no longer in the pipeline; remove its dead letters with "
                f"`pipekit dlq purge --stage {name}`"
            )
            report.skipped_code = "not_in_pipeline"
            continue
        lease = backends.locks.lock(f"stage/{pipeline.name}/{name}", 60.0)
        if not lease.acquire(timeout=lock_timeout):
            holder = lease.holder()
            report.skipped = (
                f"stage {name!r} is running{f' ({holder})' if holder else ''}; "
                "retry its dead letters when it is done"
            )
            report.skipped_code = "stage_running"
            continue
        try:
            _retry_stage(pipeline, backends, evaluator, st, letters, lease, report)
        finally:
            lease.release()
    return reports


def _retry_stage(
    pipeline: Any,
    backends: Any,
    evaluator: Any,
    st: Any,
    letters: list[DeadLetter],
    lease: Any,
    report: StageRetry,
) -> None:
    from ..plugins._processors import RecordStage

    d = evaluator.decide(st)
    if d.run:
        report.skipped = (
            f"stage {st.name!r} is not up to date ({d.reason}); `pipekit run` processes its "
            "input again, dead letters included"
        )
        report.skipped_code, report.reason_code = "not_up_to_date", d.code
        return
    current = [x for x in letters if x.fingerprint == d.fingerprint]
    report.outdated = len(letters) - len(current)
    if not current:
        return
    processor = st.processor
    if not isinstance(processor, RecordStage):
        report.skipped = f"stage {st.name!r} does not run a record processor any more"
        report.skipped_code = "not_a_record_stage"
        return
    if type(processor).restore_state is not RecordStage.restore_state:
        processor = copy.copy(processor)
        processor.restore_state(None)
    appended, done = _replay(backends, processor, st, current, report)
    if done:
        intent = _append(pipeline, st, d, lease, appended, done, report)
        _finish(pipeline, backends, intent)


def _replay(
    backends: Any, processor: Any, st: Any, letters: list[DeadLetter], report: StageRetry
) -> tuple[list[bytes], list[int]]:
    """Feed ``letters`` through ``processor``: the output of those that
    now succeed, and their ids; those that fail again are dead letters again."""
    appended: list[bytes] = []
    done: list[int] = []
    for letter in letters:
        report.retried += 1
        out, tries, error = _try(processor, letter, st.params, st.config.record_retry)
        if out is not None:
            appended.append(out)
            done.append(int(letter.id or 0))
            report.succeeded += 1
            report.appended_records += out.count(b"\n")
            continue
        report.still_failing += 1
        assert error is not None
        backends.dead_letters.add(
            attrs.evolve(
                letter,
                error_type=type(error).__name__,
                message=str(error),
                traceback="".join(traceback.format_exception(error, chain=False)),
                attempts=letter.attempts + tries,
                last_failed=time.time(),
            )
        )
    return appended, done


def _append(
    pipeline: Any,
    st: Any,
    d: Any,
    lease: Any,
    appended: list[bytes],
    done: list[int],
    report: StageRetry,
) -> dict[str, Any]:
    """The stage's output with ``appended`` at its end, put in place (a
    durable copy, then the intent to finish, then the rename): the intent."""
    final = st.output_paths[0]
    key = st.outputs[0]
    report.output = key
    tmp = temp_path_for(final)
    h = hashlib.sha256()
    try:
        with open(final, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
            data = b"".join(appended)
            h.update(data)
            dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
        intent = {
            "pipeline": pipeline.name,
            "stage": st.name,
            "ids": done,
            "output": key,
            "path": str(final),
            "sha256": h.hexdigest(),
            "key": d.key,
            "fingerprint": d.fingerprint,
            "token": getattr(lease, "token", None),
            "created": time.time(),
        }
        atomic_write_bytes(pipeline.state_dir / INTENTS / f"{st.name}.json", _json.dumps(intent))
        move_into_place(tmp, final)  # and its private temp folder goes
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(final.parent)
    return intent

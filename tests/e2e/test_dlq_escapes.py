"""`pipekit dlq show` and `list` escape what a terminal would act on (issue
20 item 11): a poison record must not retitle, clear or rewrite the
terminal of whoever looks at it."""

from __future__ import annotations

import json
import time

from conftest import Project
from pipekit.stores import DeadLetter
from pipekit.stores._file_dead_letters import FileDeadLetterStore

POISON = "fatal\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\x08\x9b1m \u202eevil"


def _poison(project: Project) -> None:
    project.write("in.txt", "ok\n")
    project.pipeline(
        [
            {
                "name": "r",
                "uses": "record-fatal",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"calls": "calls.txt"},
            }
        ],
        name="p",
    )
    store = FileDeadLetterStore(project.root / ".pipekit" / "deadletters.sqlite")
    now = time.time()
    store.add(
        DeadLetter(
            pipeline="p",
            stage="r",
            fingerprint="fp",
            run_id="run\x1b[2J",
            input="in.txt",
            input_index=0,
            offset=3,
            line=2,
            format="lines",
            record=POISON.encode() + b"\xff",
            error_type="ValueError",
            message=f"bad record {POISON!s}",
            traceback=f"Traceback (most recent call last):\n  ValueError: {POISON}\n",
            attempts=1,
            first_failed=now,
            last_failed=now,
        )
    )
    store.close()


def _assert_safe(text: str) -> None:
    for control in ("\x1b", "\x07", "\x08", "\r", "\x9b", "\u202e"):
        assert control not in text, repr(text)


def test_dlq_show_and_list_escape_control_characters(project: Project) -> None:
    _poison(project)
    shown = project.cli("dlq", "show", "1")
    assert shown.returncode == 0, shown.stderr
    _assert_safe(shown.stdout)
    assert (
        "record:       fatal\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\r\\x08\\x9b1m \\u202eevil\\xff"
        in shown.stdout
    )
    assert "run:          run\\x1b[2J" in shown.stdout
    assert "ValueError: fatal\\x1b]0;pwned" in shown.stdout

    listed = project.cli("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    _assert_safe(listed.stdout)
    assert "bad record fatal\\x1b]0;pwned" in listed.stdout

    as_json = json.loads(project.cli("dlq", "show", "1", "--json").stdout)
    assert as_json["record"] is None  # not UTF-8: given as base64, exactly
    assert as_json["message"] == f"bad record {POISON}"


def test_printable_keeps_every_script_and_escapes_controls() -> None:
    from pipekit.cli._common import printable

    assert printable("héllo 日本 ✓ \\path") == "héllo 日本 ✓ \\path"
    assert printable("a\tb\nc\x7f\u2028") == "a\\tb\\nc\\x7f\\u2028"

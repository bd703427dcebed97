"""The run record's stage entries."""

from __future__ import annotations

import attrs
from pipekit import _json
from pipekit.engine._results import HOST, StageResult


def test_record_has_every_field_as_asdict_would_and_the_host() -> None:
    r = StageResult("a", "ok", 1.5, "why", 2, "k", "f", None, {"x": [1, {"y": 2}]}, "isolated")
    assert r.record() == {**attrs.asdict(r), "host": HOST}  # times None: not started
    assert list(r.record()) == [a.name for a in attrs.fields(StageResult)] + ["host"]
    assert r.record()["info"] is r.info  # not copied


def test_attrs_values_in_info_still_serialize() -> None:
    inner = StageResult("b", "skipped")
    out = _json.loads(_json.dumps(StageResult("a", "ok", info={"inner": inner}).record()))
    assert out["info"]["inner"]["name"] == "b"

"""The run record's stage entries."""

from __future__ import annotations

import attrs
from pipekit import _json
from pipekit.engine._results import StageResult


def test_record_has_every_field_as_asdict_would() -> None:
    r = StageResult("a", "ok", 1.5, "why", 2, "k", "f", None, {"x": [1, {"y": 2}]}, "isolated")
    assert r.record() == attrs.asdict(r)
    assert list(r.record()) == [a.name for a in attrs.fields(StageResult)]


def test_attrs_values_in_info_still_serialize() -> None:
    inner = StageResult("b", "skipped")
    out = _json.loads(_json.dumps(StageResult("a", "ok", info={"inner": inner}).record()))
    assert out["info"]["inner"]["name"] == "b"

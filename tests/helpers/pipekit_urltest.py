"""A stage processor that fetches a URL with urllib, for the network refusal
tests: urllib wraps the guard's refusal in ``URLError.reason``."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import attrs
import pipekit


@attrs.define
class FetchParams:
    url: str = ""
    calls: str = ""
    """A file that gets one line per call (so a test can count attempts)."""


class Fetch(pipekit.Stage):
    name = "net-fetch"
    version = "1"
    Params = FetchParams

    def run(self, ctx: pipekit.StageContext) -> None:
        p: FetchParams = ctx.params
        with open(p.calls, "a") as f:
            f.write("call\n")
        with urllib.request.urlopen(p.url, timeout=5) as response:
            ctx.outputs[0].write_bytes(response.read())


class FetchRecords(pipekit.RecordStage):
    """Fetches the URL once per record (the record is the URL)."""

    name = "net-fetch-records"
    version = "1"
    Params = FetchParams

    def process(self, record: str, params: FetchParams) -> Iterator[str]:
        with open(params.calls, "a") as f:
            f.write(record + "\n")
        with urllib.request.urlopen(record, timeout=5) as response:
            yield response.read().decode()


@pipekit.hookimpl
def register_stages(register):  # type: ignore[no-untyped-def]
    register(Fetch())
    register(FetchRecords())

"""An observer plugin that logs every observer call to $PIPEKIT_OBSERVER_LOG."""

from __future__ import annotations

import json
import os
from typing import Any

import pipekit


def _log(**entry: Any) -> None:
    with open(os.environ["PIPEKIT_OBSERVER_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")


@pipekit.hookimpl
def on_stage_start(run: Any, stage: Any) -> None:
    _log(hook="on_stage_start", stage=stage.name)


@pipekit.hookimpl
def on_stage_end(run: Any, stage: Any, result: Any) -> None:
    import threading

    _log(
        hook="on_stage_end",
        stage=stage.name,
        status=result.status,
        thread=threading.current_thread().name,
    )


@pipekit.hookimpl
def on_record_failed(run: Any, stage: Any, record: Any, error: BaseException) -> None:
    _log(hook="on_record_failed", stage=stage.name, record=record, type=type(record).__name__)

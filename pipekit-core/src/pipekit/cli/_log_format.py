"""``--log-format json``: one JSON object per line on stderr, for log
records and for pipekit's own messages (errors, notices) alike."""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import _json

__all__ = ["JsonFormatter", "json_line"]


def json_line(
    level: str, message: str, *, logger: str = "pipekit", created: float | None = None, **extra: Any
) -> str:
    """One stderr line as JSON: time, level, logger, message and ``extra``."""
    doc = {
        "time": time.time() if created is None else created,
        "level": level,
        "logger": logger,
        "message": message,
    }
    doc.update((key, value) for key, value in extra.items() if value is not None)
    return _json.dumps(doc).decode()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        trace = self.formatException(record.exc_info) if record.exc_info else None
        return json_line(
            record.levelname.lower(),
            record.getMessage(),
            logger=record.name,
            created=record.created,
            traceback=trace,
        )

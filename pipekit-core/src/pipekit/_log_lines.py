"""Log lines on stderr: ``pipekit: LEVEL: message``, or with ``--log-format
json`` one JSON object per line, for log records and for pipekit's own
messages (errors, notices) alike. A worker process sets up its logging as
the runner's is (:func:`mirror`, :func:`configure`)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from . import _json

__all__ = ["JsonFormatter", "TextFormatter", "json_line", "configure", "mirror"]

TEXT_FORMAT = "pipekit: %(levelname)s: %(message)s"


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


class TextFormatter(logging.Formatter):
    """``pipekit: LEVEL: message``, with no blank line after a message that
    ends with one (a Python warning does)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip("\n")


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


def configure(log_format: str, level: int) -> logging.StreamHandler[Any]:
    """Log pipekit's records to stderr in ``log_format`` (``text`` or
    ``json``) from ``level`` up; the handler made."""
    handler = logging.StreamHandler(sys.stderr)
    json = log_format == "json"
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    ours = logging.getLogger("pipekit")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    # A library's log lines and Python's warnings in the same format (else
    # printed as they are), from warnings up (errors only with -q); not
    # where the root logger has handlers of someone else's (a test runner).
    root = logging.getLogger()
    others = [h for h in root.handlers if not getattr(h, "pipekit_made", False)]
    if not others:
        handler.pipekit_made = True  # type: ignore[attr-defined]
        root.handlers[:] = [handler]
        root.setLevel(max(level, logging.WARNING))
        logging.captureWarnings(True)
    return handler


def mirror() -> tuple[str, int]:
    """This process's ``(log_format, level)``, for a worker to :func:`configure`."""
    root = logging.getLogger("pipekit")
    json = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return ("json" if json else "text"), root.getEffectiveLevel()

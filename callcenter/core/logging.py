"""Structured logs: one line per event, JSON (default) or human text.

Use :func:`log_event` for anything worth grepping later::

    log_event(log, "call.answered", call_id=msg.call_id, from_uri=str(frm))

which prints ``{"ts":"2025-01-01T12:00:00.123Z","level":"info","event":"call.answered",
"call_id":"abc@host","logger":"callcenter.calls","from_uri":"sip:..."}``. Records logged the plain
``logging`` way (third-party libraries) come out as ``"event":"log"`` with the text in ``msg``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "log_event", "setup_logging"]

# Attribute names on the LogRecord; prefixed so they never clash with logging's own.
_EVENT = "cc_event"
_CALL_ID = "cc_call_id"
_FIELDS = "cc_fields"
_CORE_KEYS = frozenset({"ts", "level", "event", "call_id", "logger", "msg", "exc"})

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    call_id: str | None = None,
    level: int = logging.INFO,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    """Log one structured event. Costs one ``isEnabledFor`` check when ``level`` is disabled.

    ``exc_info=True`` inside an ``except`` block adds the traceback (as ``exc``).
    """
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        event,
        exc_info=exc_info,
        extra={_EVENT: event, _CALL_ID: call_id, _FIELDS: fields},
        stacklevel=2,
    )


def _timestamp(record: logging.LogRecord) -> str:
    # UTC, millisecond precision, ISO 8601 with a Z.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _payload(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "event": getattr(record, _EVENT, "log"),
        "call_id": getattr(record, _CALL_ID, None),
        "logger": record.name,
    }
    fields: dict[str, Any] | None = getattr(record, _FIELDS, None)
    if fields is None:
        out["msg"] = record.getMessage()
    else:
        for key, value in fields.items():
            out[key if key not in _CORE_KEYS else f"field_{key}"] = value
    if record.exc_info:
        out["exc"] = formatter.formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    """One compact JSON object per line (newlines inside values are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_payload(record, self), separators=(",", ":"), default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ts LEVEL event call_id=... key=value ...`` on one line, for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        data = _payload(record, self)
        head = f"{data.pop('ts')} {data.pop('level').upper():<7} {data.pop('event')}"
        if data.get("call_id") is None:
            data.pop("call_id")
        data.pop("logger")
        exc = data.pop("exc", None)
        parts = [head]
        for key, value in data.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if not text or any(c.isspace() or c in '"=' for c in text):
                text = json.dumps(text, ensure_ascii=False)
            parts.append(f"{key}={text}")
        if exc:
            parts.append("exc=" + json.dumps(exc))
        return " ".join(parts)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Marks the handler installed here, so calling setup_logging again replaces it."""


def setup_logging(level: str | int = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Send every log record (ours and libraries') to ``stream`` (stderr) in ``fmt`` ("json"|"text").

    Idempotent: a second call replaces the handler installed by the first.
    """
    numeric = _LEVELS[level.lower()] if isinstance(level, str) else level
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be json or text, not {fmt!r}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(numeric)

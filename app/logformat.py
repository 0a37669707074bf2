"""How the service logs: LOG_FORMAT `text` (readable, the default) or `json` (one object a line:
`ts`, `level`, `logger`, `msg`, and `run_id`, `thread_id`, `graph`, `tenant` where known, `exc`
with a traceback). Set on the app's loggers and on uvicorn's (its access log included) when the
app is built, so every line the process writes has one format.

Secrets: the app never logs a key, a header or the model key. The one secret a line could carry
is a stream token in a URL (`?token=`, app/auth/tokens.py), which uvicorn's access log prints
with the path: every line's text goes through `redact`, which replaces each `token` query
value with `[redacted]`.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from app.engine import logctx

TOKEN_PARAM = re.compile(r"([?&]token=)[^&\s\"']*")
REDACTED = r"\1[redacted]"


def redact(text: str) -> str:
    """`text` with the value of every `token` query parameter replaced."""
    return TOKEN_PARAM.sub(REDACTED, text) if "token=" in text else text


class TextFormatter(logging.Formatter):
    def __init__(self, named: bool = True) -> None:
        fmt = (
            "%(levelname)s:     %(name)s: %(message)s"
            if named
            else "%(levelname)s:     %(message)s"
        )
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        context = logctx.current.get()
        for name in logctx.FIELDS:
            value = getattr(record, name, None)
            if value is None and context is not None:
                value = context.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        return orjson.dumps(line, default=str).decode()


def configure_logging(log_format: str, level: str) -> None:
    """Give the app's and uvicorn's loggers one handler each in `log_format` (`text`/`json`)."""

    def formatter(named: bool) -> logging.Formatter:
        return JsonFormatter() if log_format == "json" else TextFormatter(named)

    app_logger = logging.getLogger("app")
    app_logger.setLevel(level)
    _install(app_logger, formatter(True))
    app_logger.propagate = False
    _install(logging.getLogger("uvicorn"), formatter(False))
    access = logging.getLogger("uvicorn.access")
    if access.handlers:  # none: uvicorn runs with --no-access-log
        _install(access, formatter(False))
    # Every other library (LangChain's callback warnings, httpx, ...) logs through the root
    # logger: give it the same format, else Python's last-resort handler prints plain text.
    root = logging.getLogger()
    _install(root, formatter(True))
    if root.level == logging.NOTSET or root.level < logging.WARNING:
        root.setLevel(logging.WARNING)


def _install(logger: logging.Logger, formatter: logging.Formatter) -> None:
    """Replace the logger's stream handlers (uvicorn's defaults, or ours from before)."""
    for old in list(logger.handlers):
        if isinstance(old, logging.StreamHandler):
            logger.removeHandler(old)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logger.addHandler(handler)

"""Logging in the two formats Go exporters offer: logfmt and JSON, one line per event."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from exporter.values import redact_url

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
          logging.ERROR: "error", logging.CRITICAL: "error"}


def _fields(record: logging.LogRecord) -> dict[str, str]:
    msg = record.getMessage()
    if record.exc_info:
        msg += " " + logging.Formatter().formatException(record.exc_info).replace("\n", " | ")
    msg = redact_url(msg)  # httpx quotes URLs, user-info included, in its errors
    ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    return {"ts": ts.replace("+00:00", "Z"), "level": _NAMES.get(record.levelno, "info"),
            "logger": record.name, "msg": msg}


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in _fields(record).items():
            if value == "" or any(c in value for c in ' ="\\\n'):
                value = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace(
                    "\n", "\\n") + '"'
            parts.append(f"{key}={value}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record))


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # The docker SDK, urllib3 and httpx log every connection or request; keep them quiet.
    for noisy in ("urllib3", "docker", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.WARNING))

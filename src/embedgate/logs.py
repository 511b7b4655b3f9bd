"""Structured logging: one JSON object per line, so ELK / Loki can ingest it and no input
(newlines, fake JSON) can break out of its line. Request logs never carry input text."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _KnownNoise(logging.Filter):
    """Milvus Lite answers pymilvus's AllocTimestamp probe with 'not implemented', which the
    embedded gRPC server logs as an error with a traceback on every write (harmless); jieba
    logs its dictionary loading at DEBUG whatever the configured level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "jieba" and record.levelno < logging.WARNING:
            return False  # jieba resets its logger to DEBUG when milvus-lite imports it
        if record.name == "grpc._server" and record.exc_info and record.exc_info[1] is not None:
            return "AllocTimestamp" not in "".join(
                logging.Formatter().formatException(record.exc_info)
            )
        return True


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_KnownNoise())
    # Python warnings (a library's DeprecationWarning) become log lines too, so that with
    # the JSON format every line on stderr is JSON for the log shippers
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every call at INFO: in gateway mode, a line per upstream batch and probe
    logging.getLogger("httpx").setLevel(logging.WARNING)
    jieba = logging.getLogger("jieba")  # jieba installs its own DEBUG handler
    jieba.handlers[:] = []
    jieba.setLevel(logging.WARNING)

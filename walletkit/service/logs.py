"""Structured logs: one JSON object per line on stderr (or readable lines: ``console``).

Every line has ``ts`` (UTC, milliseconds), ``level``, ``service``, ``logger`` and ``msg``,
then the fields of the record's ``extra={...}`` and of the enclosing :func:`log_context`.
Field names shared by the services: ``wallet_id``, ``deposit_id``, ``group``, ``topic``,
``partition``, ``offset``. The stream toolkit knows no wallets and logs a record's key as
``record_key``; in the wallet every Kafka key is a wallet id, so it is written as ``wallet_id``.

The format (``WALLET_LOG_FORMAT`` / ``--log-format``) is ``json`` (the default; what the
containers write and log collectors parse) or ``console``: ``HH:MM:SS.mmm LEVEL logger:
message key=value ...``, for a person reading ``make run``'s logs.

The level (``WALLET_LOG_LEVEL`` / ``--log-level``) is one level, ``debug``, ``info``,
``warning`` or ``error``, optionally followed by per-logger levels:
``info,librdkafka=debug,walletkit.stream.view=debug``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
#: Extra fields renamed on output (see the module doc).
_RENAMED = {"record_key": "wallet_id"}
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("wallet_log_context", default={})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (e.g. ``deposit_id=..., wallet_id=...``) to every line logged inside, in
    this thread or asyncio task."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "service", "logger", "msg", ...context, ...extra}``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_CONTEXT.get())
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[_RENAMED.get(key, key)] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class ConsoleFormatter(logging.Formatter):
    """``05:44:28.123 INFO  wallet_api.access: POST /deposit 202  request_id=... duration_ms=1.2``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(_CONTEXT.get())
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                fields[_RENAMED.get(key, key)] = value
        line = (
            time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d} "
            f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        if fields:
            line += "  " + " ".join(f"{k}={_console_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _console_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c in '"=' for c in text)) else text


FORMATS = ("json", "console")
#: The format setup_logging chose (AccessLog writes its lines the same way).
_format = "json"
_service = "wallet"


class AccessLog:
    """One line per HTTP request, written without the logging machinery.

    Through ``logging`` an access line cost a GET about a third of its throughput (a record,
    a formatter and a write per request: ``make bench``). These lines are formatted
    directly, in the format of every other line (``logger`` is ``name``), and written in
    batches: when BATCH lines wait, or FLUSH_SECONDS after the first of them, on the event
    loop that logs them. So they may appear up to FLUSH_SECONDS after lines logged later;
    each carries its own ``ts``. Off when ``name``'s level is above info.
    """

    BATCH = 256
    FLUSH_SECONDS = 0.2

    def __init__(self, name: str, stream=None) -> None:
        self.name = name
        self._stream = stream
        self._lines: list[str] = []
        self._flush_handle = None
        self._second = -1
        self._ts_prefix = ""

    @property
    def enabled(self) -> bool:
        return logging.getLogger(self.name).isEnabledFor(logging.INFO)

    def _ts(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._ts_prefix = time.strftime(
                "%Y-%m-%dT%H:%M:%S" if _format == "json" else "%H:%M:%S",
                time.gmtime(now) if _format == "json" else time.localtime(now),
            )
        return f"{self._ts_prefix}.{int((now - second) * 1000):03d}"

    def request(self, method: str, route: str, status: int, duration_ms: float, request_id: str) -> None:
        """Log one request. ``method``, ``route`` and ``request_id`` must be JSON-safe tokens
        (a bounded method set, a route template, a checked request id)."""
        now = time.time()
        if _format == "json":
            line = (
                f'{{"ts":"{self._ts(now)}Z","level":"info","service":"{_service}","logger":"{self.name}",'
                f'"msg":"{method} {route} {status}","method":"{method}","route":"{route}","status":{status},'
                f'"duration_ms":{duration_ms:.2f},"request_id":"{request_id}"}}\n'
            )
        else:
            line = (
                f"{self._ts(now)} INFO    {self.name}: {method} {route} {status}  request_id={request_id} "
                f"method={method} route={route} status={status} duration_ms={duration_ms:.2f}\n"
            )
        self._lines.append(line)
        if len(self._lines) >= self.BATCH:
            self.flush()
        elif self._flush_handle is None:
            try:
                import asyncio

                self._flush_handle = asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop: write at once
                self.flush()

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._lines:
            lines, self._lines = self._lines, []
            stream = self._stream or sys.stderr
            stream.write("".join(lines))
            stream.flush()


def parse_level(spec: str) -> tuple[int, dict[str, int]]:
    """``"info,librdkafka=debug"`` → (INFO, {"librdkafka": DEBUG}); ValueError naming what is wrong."""
    root: int | None = None
    loggers: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, level = item.rpartition("=")
        value = LEVELS.get(level.strip().lower())
        if value is None:
            raise ValueError(f"log level {level.strip()!r} is not one of debug, info, warning, error")
        if sep:
            if not name.strip():
                raise ValueError(f"{item!r}: a per-logger level is written logger=level")
            loggers[name.strip()] = value
        elif root is not None:
            raise ValueError(f"{spec!r} names more than one default level")
        else:
            root = value
    return (logging.INFO if root is None else root), loggers


def setup_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Log lines on stderr at ``level`` in format ``fmt`` (see the module doc); exits with a
    message if either is invalid."""
    try:
        root_level, loggers = parse_level(level)
    except ValueError as exc:
        raise SystemExit(f"{service}: invalid --log-level / WALLET_LOG_LEVEL: {exc}") from None
    if fmt not in FORMATS:
        raise SystemExit(f"{service}: invalid --log-format / WALLET_LOG_FORMAT {fmt!r}: use json or console")
    global _format, _service
    _format, _service = fmt, service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(root_level)
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, root_level))
    for name, value in loggers.items():
        logging.getLogger(name).setLevel(value)

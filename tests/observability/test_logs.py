"""Structured logs: JSON lines with level and service, the wallet and deposit ids where relevant,
and a configurable level."""

from __future__ import annotations

import json
import logging

import pytest

from walletkit.service.logs import JsonFormatter, log_context, parse_level, setup_logging


def record(msg: str = "hello", level: int = logging.INFO, **extra) -> logging.LogRecord:
    rec = logging.getLogger("walletkit.test").makeRecord(
        "walletkit.test", level, __file__, 1, msg, (), None, extra=extra or None
    )
    return rec


def test_a_line_is_one_json_object_with_level_service_and_extras():
    line = JsonFormatter("wallet-api").format(record("deposit stored", deposit_id="d1", wallet_id="w1"))
    doc = json.loads(line)
    assert "\n" not in line
    assert doc["level"] == "info" and doc["service"] == "wallet-api" and doc["logger"] == "walletkit.test"
    assert doc["msg"] == "deposit stored" and doc["deposit_id"] == "d1" and doc["wallet_id"] == "w1"
    assert doc["ts"].endswith("Z")


def test_the_toolkit_key_is_written_as_the_wallet_id():
    doc = json.loads(JsonFormatter("wallet-balance").format(record("skipping", record_key="w9", partition=3, offset=7)))
    assert doc["wallet_id"] == "w9" and "record_key" not in doc and doc["partition"] == 3 and doc["offset"] == 7


def test_log_context_adds_fields_to_every_line_inside_it():
    fmt = JsonFormatter("wallet-api")
    with log_context(deposit_id="d2", wallet_id="w2"):
        with log_context(partition=1):
            inner = json.loads(fmt.format(record("inner")))
        outer = json.loads(fmt.format(record("outer", wallet_id="explicit")))
    after = json.loads(fmt.format(record("after")))
    assert inner["deposit_id"] == "d2" and inner["wallet_id"] == "w2" and inner["partition"] == 1
    assert outer["wallet_id"] == "explicit" and "partition" not in outer, "extra wins over the context"
    assert "deposit_id" not in after


def test_exceptions_stay_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter("svc").format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


@pytest.mark.parametrize(
    "spec, root, loggers",
    [
        ("info", logging.INFO, {}),
        ("DEBUG", logging.DEBUG, {}),
        ("warn", logging.WARNING, {}),
        ("error,librdkafka=debug", logging.ERROR, {"librdkafka": logging.DEBUG}),
        ("walletkit.stream.view=debug", logging.INFO, {"walletkit.stream.view": logging.DEBUG}),
        ("", logging.INFO, {}),
    ],
)
def test_levels_parse(spec, root, loggers):
    assert parse_level(spec) == (root, loggers)


@pytest.mark.parametrize("spec", ["verbose", "info,debug", "=debug", "librdkafka=loud"])
def test_bad_levels_are_refused_with_a_message(spec):
    with pytest.raises(ValueError):
        parse_level(spec)
    with pytest.raises(SystemExit, match="invalid --log-level"):
        setup_logging("svc", spec)


def test_setup_applies_root_and_per_logger_levels():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("obs.test.child").level)
    try:
        setup_logging("svc", "warning,obs.test.child=debug")
        assert root.level == logging.WARNING
        assert logging.getLogger("obs.test.child").level == logging.DEBUG
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("obs.test.child").setLevel(saved[2])


def test_the_console_format_is_one_readable_line_with_the_fields_after_the_message():
    from walletkit.service.logs import ConsoleFormatter

    with log_context(request_id="r-1"):
        line = ConsoleFormatter().format(record("deposit accepted", wallet_id="w1", note="two words", amount=12.5))
    assert "\n" not in line
    head, _, fields = line.rpartition("  ")
    assert head.endswith("INFO    walletkit.test: deposit accepted")
    assert fields == 'request_id=r-1 wallet_id=w1 note="two words" amount=12.5'


def test_an_unknown_log_format_is_refused_with_the_choices():
    with pytest.raises(SystemExit, match="json or console"):
        setup_logging("svc", "info", "xml")


def test_access_lines_are_the_same_json_as_every_other_line_and_written_in_batches(monkeypatch):
    import io

    from walletkit.service import logs
    from walletkit.service.logs import AccessLog

    out = io.StringIO()
    access = AccessLog("wallet_api.access", stream=out)
    monkeypatch.setattr(logs, "_format", "json")  # put back even when an assertion fails
    monkeypatch.setattr(logs, "_service", "wallet-api")
    access.request("GET", "/details/{wallet_id}", 200, 1.234, "r-7")  # no event loop: written at once
    doc = json.loads(out.getvalue())
    assert doc == {
        "ts": doc["ts"],
        "level": "info",
        "service": "wallet-api",
        "logger": "wallet_api.access",
        "msg": "GET /details/{wallet_id} 200",
        "method": "GET",
        "route": "/details/{wallet_id}",
        "status": 200,
        "duration_ms": 1.23,
        "request_id": "r-7",
    }
    assert doc["ts"].endswith("Z") and len(doc["ts"]) == len("2026-01-05T10:12:43.377Z")

    import asyncio

    async def burst() -> tuple[int, int]:
        out.seek(0), out.truncate()
        for i in range(AccessLog.BATCH + 3):
            access.request("POST", "/deposit", 202, 0.5, f"r{i}")
        written_at_once = len(out.getvalue().splitlines())
        await asyncio.sleep(AccessLog.FLUSH_SECONDS + 0.1)
        return written_at_once, len(out.getvalue().splitlines())

    at_once, later = asyncio.run(burst())
    assert (at_once, later) == (AccessLog.BATCH, AccessLog.BATCH + 3), "a full batch at once, the rest shortly after"
    monkeypatch.setattr(logs, "_format", "console")
    out.seek(0), out.truncate()
    access.request("GET", "/details/{wallet_id}", 404, 0.7, "r-8")
    assert " INFO    wallet_api.access: GET /details/{wallet_id} 404  request_id=r-8 " in out.getvalue()

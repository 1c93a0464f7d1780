"""The HTTP face of the wallet: an aiohttp app factory with thin handlers.

It knows HTTP and the :class:`~wallet_api.ledger.Ledger` interface, not Kafka.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from walletkit.stream import EmitError
from walletkit.wallet import money
from wallet_api.ledger import Ledger
from wallet_api.validation import InvalidRequest, Limits, check_wallet_id, parse_deposit

log = logging.getLogger(__name__)

LEDGER = web.AppKey("ledger", Ledger)
LIMITS = web.AppKey("limits", Limits)

REQUESTS = Counter("http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"])
LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency by route.", ["route", "method"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
DEPOSITS = Counter("wallet_deposits_total", "Deposits acknowledged by Kafka.")
DEPOSITED = Counter("wallet_deposited_amount_total", "Sum of acknowledged deposit amounts, in currency units.")

JSON = "application/json"


def json_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}, separators=(",", ":")), content_type=JSON)


@web.middleware
async def observe(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Metrics per route, and every error as JSON (unknown routes, methods, oversized bodies)."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_error(exc.status, _http_error_message(exc, request))
    REQUESTS.labels(route, request.method, str(response.status)).inc()
    LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
    return response


def _http_error_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no such endpoint {request.path}; see /openapi.json"
    if exc.status == 405:
        return f"method {request.method} not allowed on {request.path}"
    if exc.status == 413:
        return f"body must be at most {request.app[LIMITS].max_body_bytes} bytes"
    return exc.reason


async def deposit(request: web.Request) -> web.Response:
    limits = request.app[LIMITS]
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        return json_error(413, f"body must be at most {limits.max_body_bytes} bytes")
    try:
        body = await request.content.read(limits.max_body_bytes + 1)
        dep = parse_deposit(body, limits)
    except InvalidRequest as exc:
        status = 413 if str(exc).startswith("body must be at most") else 400
        return json_error(status, str(exc))
    try:
        receipt = await request.app[LEDGER].deposit(dep.wallet_id, dep.amount_micros)
    except EmitError as exc:
        log.warning("deposit not stored: %s", exc, extra={"wallet_id": dep.wallet_id})
        return json_error(503, f"deposit not stored, Kafka is unavailable ({exc}); retry later")
    DEPOSITS.inc()
    DEPOSITED.inc(money.micros_to_float(dep.amount_micros))
    amount = money.format_micros(receipt.amount_micros)
    body_text = (
        f'{{"DepositID":"{receipt.deposit_id}","WalletID":{json.dumps(receipt.wallet_id)},"Amount":{amount},'
        f'"CreatedAt":{receipt.created_at_micros // 1_000_000},"CreatedAtMicros":{receipt.created_at_micros},'
        f'"Partition":{receipt.delivery.partition},"Offset":{receipt.delivery.offset}}}'
    )
    return web.Response(status=202, text=body_text, content_type=JSON)


async def details(request: web.Request) -> web.Response:
    try:
        wallet_id = check_wallet_id(request.match_info["wallet_id"], request.app[LIMITS])
    except InvalidRequest as exc:
        return json_error(400, str(exc))
    found = request.app[LEDGER].details(wallet_id)
    if found is None:
        return json_error(404, f"wallet {wallet_id} not found")
    text = (f'{{"WalletID":{json.dumps(found.wallet_id)},"Balance":{money.format_micros(found.balance_micros)},'
            f'"AboveThreshold":{"true" if found.above_threshold else "false"}}}')
    return web.Response(text=text, content_type=JSON)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text='{"status":"ok"}', content_type=JSON)


async def readyz(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    ready = ledger.ready
    body = {"status": "ok" if ready else "unavailable", **ledger.status()}
    return web.Response(status=200 if ready else 503, text=json.dumps(body), content_type=JSON)


async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def make_app(ledger: Ledger, limits: Limits = Limits()) -> web.Application:
    """The app; the ledger is started and closed with it (cleanup context)."""
    app = web.Application(middlewares=[observe], client_max_size=limits.max_body_bytes)
    app[LEDGER] = ledger
    app[LIMITS] = limits

    async def ledger_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await ledger.start()
        yield
        await ledger.close()

    app.cleanup_ctx.append(ledger_lifecycle)
    app.router.add_post("/deposit", deposit)
    app.router.add_get("/details/{wallet_id}", details)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


__all__ = ["make_app", "LEDGER", "LIMITS"]

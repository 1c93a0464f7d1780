"""The HTTP face of the wallet: two aiohttp app factories with thin handlers.

``make_app`` is the public listener (the API and its OpenAPI spec, nothing else);
``make_ops_app`` the operations listener (``/metrics``, ``/healthz``, ``/readyz``),
kept off the public port so a client can neither scrape internals nor see probes.
It knows HTTP and the :class:`~wallet_api.ledger.Ledger` interface, not Kafka.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from wallet_api.auth import Authenticator, Forbidden, Principal, Unauthorized
from wallet_api.ledger import IdempotencyConflict, InvalidToken, Ledger, NotApplied, NotReflected
from wallet_api.ratelimit import RateLimiter
from wallet_api.validation import InvalidRequest, Limits, check_idempotency_key, check_wallet_id, parse_deposit
from walletkit.service.logs import AccessLog, log_context
from walletkit.stream import EmitError
from walletkit.wallet import money

log = logging.getLogger(__name__)
#: One line per accepted deposit: who credited which wallet with what (the audit trail).
audit = logging.getLogger("wallet_api.audit")
#: One line per request on the public port: method, route template, status, duration, request id.
access = AccessLog("wallet_api.access")

LEDGER = web.AppKey("ledger", Ledger)
LIMITS = web.AppKey("limits", Limits)
IN_FLIGHT = web.AppKey("in_flight", list)  # [requests in flight on the limited routes]
AUTH = web.AppKey("auth", object)  # Authenticator, or None when authentication is off
RATE_LIMITER = web.AppKey("rate_limiter", object)  # RateLimiter, or None when off
SPEC = web.AppKey("spec", tuple)  # (YAML text, JSON bytes) of the OpenAPI spec, parsed once
ACCESS_LOG = web.AppKey("access_log", bool)  # one access-log line per request
REQUEST_ID = "wallet.request_id"  # request key: the request's id (X-Request-ID)
#: The header a client may name its request by; answered on every response, logged on every
#: line the request causes and carried in the deposit record to both processors.
REQUEST_ID_HEADER = "X-Request-ID"
#: A client's request id is kept if it is 1-128 of these (safe in headers, logs and Kafka
#: headers); anything else is replaced by a new one, not refused.
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
PRINCIPAL = "wallet.principal"  # request key: the authenticated Principal
_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})
_LIMITED_ROUTES = frozenset({"/deposit", "/details/{wallet_id}"})
OPENAPI = Path(__file__).with_name("openapi.yaml")

REQUESTS = Counter("http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route.",
    ["route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
DEPOSITS = Counter("wallet_deposits_total", "Deposits acknowledged by Kafka.")
DEPOSITED = Counter("wallet_deposited_amount_total", "Sum of acknowledged deposit amounts, in currency units.")

JSON = "application/json"

# Labelled metric children by label values: prometheus_client's labels() costs more
# than the rest of a GET's bookkeeping. The label sets are bounded (routes, methods,
# statuses), so these stay small.
_REQUEST_COUNTERS: dict[tuple[str, str, int], Any] = {}
_LATENCIES: dict[tuple[str, str], Any] = {}


def _count(route: str, method: str, status: int) -> None:
    counter = _REQUEST_COUNTERS.get((route, method, status))
    if counter is None:
        counter = _REQUEST_COUNTERS[(route, method, status)] = REQUESTS.labels(route, method, str(status))
    counter.inc()


def _observe_latency(route: str, method: str, seconds: float) -> None:
    histogram = _LATENCIES.get((route, method))
    if histogram is None:
        histogram = _LATENCIES[(route, method)] = LATENCY.labels(route, method)
    histogram.observe(seconds)


def json_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}, separators=(",", ":")), content_type=JSON)


#: New request ids: a random prefix per process and a counter (a uuid4 per request cost
#: ~2 % of a POST's CPU), unique across processes and restarts with high probability.
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)


def choose_request_id(header: str | None) -> str:
    """The client's X-Request-ID if it is acceptable, else a new id."""
    if header is not None and _REQUEST_ID_OK.fullmatch(header):
        return header
    return f"{_ID_PREFIX}-{next(_ids):x}"


@web.middleware
async def observe(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Metrics per route, every error as JSON (unknown routes, methods, oversized bodies), the
    request id (X-Request-ID) on the response and on every log line, and the access log."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    method = request.method if request.method in _METHODS else "other"  # a bounded label set
    request_id = request[REQUEST_ID] = choose_request_id(request.headers.get(REQUEST_ID_HEADER))
    started = time.perf_counter()
    with log_context(request_id=request_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = json_error(exc.status, _http_error_message(exc, request))
        elapsed = time.perf_counter() - started
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        _count(route, method, response.status)
        _observe_latency(route, method, elapsed)
        if request.app.get(ACCESS_LOG):
            access.request(method, route, response.status, elapsed * 1000, request_id)
    return response


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Who may ask, how often, and how many at once, in the order that keeps the cheap checks first.

    1. authentication (when on): 401 before anything else is spent on the request;
    2. the client's rate limit (by principal when authentication is on, else by address): 429;
    3. the body, read in full within ``body_timeout``: a client that sends it slowly holds
       only its own connection, not one of the in-flight slots;
    4. an in-flight slot: at most ``max_in_flight`` requests are served at once (429).
    """
    resource = request.match_info.route.resource
    if resource is None or resource.canonical not in _LIMITED_ROUTES:
        return await handler(request)
    app = request.app
    limits = app[LIMITS]
    auth: Authenticator | None = app[AUTH]
    client = request.remote or "unknown"
    limiter: RateLimiter | None = app[RATE_LIMITER]
    if auth is not None:
        try:
            principal = await auth.authenticate(request.headers.get("Authorization"))
        except Unauthorized as exc:
            # Failed attempts count against the address, so guessing costs the guesser.
            if limiter is not None and (wait := limiter.retry_after(client)):
                return _rate_limited(limiter, wait)
            response = json_error(401, str(exc))
            response.headers["WWW-Authenticate"] = exc.www_authenticate
            return response
        request[PRINCIPAL] = principal
        client = f"principal:{principal.subject}"
    if limiter is not None and (wait := limiter.retry_after(client)):
        return _rate_limited(limiter, wait)
    if request.method == "POST" and request.body_exists:
        if request.content_length is not None and request.content_length > limits.max_body_bytes:
            return json_error(413, f"body must be at most {limits.max_body_bytes} bytes")
        try:
            # To EOF, across TCP segments, bounded by client_max_size (413); the handler's
            # read() returns the same bytes from memory.
            await asyncio.wait_for(request.read(), limits.body_timeout)
        except TimeoutError:
            return json_error(408, f"body not received within {limits.body_timeout:g}s")
        except web.RequestPayloadError as exc:  # e.g. a corrupt gzip/deflate body
            return json_error(400, f"body could not be read: {exc}")
    state = app[IN_FLIGHT]
    if state[0] >= limits.max_in_flight:
        response = json_error(429, f"too many requests in flight (limit {limits.max_in_flight}); retry shortly")
        response.headers["Retry-After"] = "1"
        return response
    state[0] += 1
    try:
        return await handler(request)
    finally:
        state[0] -= 1


def _http_error_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no such endpoint {request.path}; see /openapi.json"
    if exc.status == 405:
        return f"method {request.method} not allowed on {request.path}"
    if exc.status == 413 and LIMITS in request.app:
        return f"body must be at most {request.app[LIMITS].max_body_bytes} bytes"
    return exc.reason


def _rate_limited(limiter: RateLimiter, wait: float) -> web.Response:
    response = json_error(429, f"rate limit of {limiter.limit.rate:g} requests/s exceeded; retry later")
    response.headers["Retry-After"] = RateLimiter.header(wait)
    return response


def _forbidden(exc: Forbidden) -> web.Response:
    response = json_error(403, str(exc))
    response.headers["WWW-Authenticate"] = exc.www_authenticate
    return response


async def deposit(request: web.Request) -> web.Response:
    limits = request.app[LIMITS]
    try:
        key = check_idempotency_key(request.headers.get("Idempotency-Key"))
        body = await request.read()  # already read by the guard, within its time bound
        dep = parse_deposit(body, limits)
    except InvalidRequest as exc:
        status = 413 if str(exc).startswith("body must be at most") else 400
        return json_error(status, str(exc))
    except web.RequestPayloadError as exc:  # e.g. a corrupt gzip/deflate body
        return json_error(400, f"body could not be read: {exc}")
    principal: Principal | None = request.get(PRINCIPAL)
    auth: Authenticator | None = request.app[AUTH]
    if auth is not None:
        try:
            auth.authorize(principal, auth.settings.deposit_scope, dep.wallet_id)
        except Forbidden as exc:
            return _forbidden(exc)
    subject = principal.subject if principal is not None else None
    with log_context(wallet_id=dep.wallet_id, idempotency_key=key):
        try:
            receipt = await request.app[LEDGER].deposit(
                dep.wallet_id, dep.amount_micros, key, principal=subject, request_id=request[REQUEST_ID]
            )
        except IdempotencyConflict as exc:
            return json_error(409, str(exc))
        except EmitError as exc:
            log.warning("deposit not stored: %s", exc)
            retry = " with the same Idempotency-Key" if key else ""
            response = json_error(503, f"deposit not stored: {exc}; retry later{retry}")
            response.headers["Retry-After"] = "1"
            return response
        log.debug("deposit accepted", extra={"deposit_id": receipt.deposit_id, "replayed": receipt.replayed})
    if not receipt.replayed:
        DEPOSITS.inc()
        DEPOSITED.inc(money.micros_to_float(dep.amount_micros))
    audit.info(
        "deposit accepted",
        extra={
            "principal": subject or "anonymous",
            "client_address": request.remote,
            "wallet_id": receipt.wallet_id,
            "amount": money.format_micros(receipt.amount_micros),
            "deposit_id": receipt.deposit_id,
            "idempotency_key": key,
            "replayed": receipt.replayed,
            "partition": receipt.partition,
            "offset": receipt.offset,
        },
    )
    text = (
        f'{{"DepositID":"{receipt.deposit_id}","WalletID":"{receipt.wallet_id}",'
        f'"Amount":{money.format_micros(receipt.amount_micros)},'
        f'"CreatedAt":{receipt.created_at_micros // 1_000_000},"CreatedAtMicros":{receipt.created_at_micros},'
        f'"Partition":{receipt.partition},"Offset":{receipt.offset},'
        f'"ConsistencyToken":"{receipt.consistency_token}"}}'
    )
    response = web.Response(status=202, text=text, content_type=JSON)
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def details(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    try:
        wallet_id = check_wallet_id(request.match_info["wallet_id"], request.app[LIMITS])
        auth: Authenticator | None = request.app[AUTH]
        if auth is not None:
            auth.authorize(request.get(PRINCIPAL), auth.settings.read_scope, wallet_id)
        token = request.query.get("token") if request.query_string else None
        if token is None:
            token = request.headers.get("Consistency-Token")
        found = (
            ledger.details(wallet_id)
            if token is None
            else await ledger.details_reflecting(wallet_id, token, request.app[LIMITS].consistency_timeout)
        )
    except (InvalidRequest, InvalidToken) as exc:
        return json_error(400, str(exc))
    except Forbidden as exc:
        return _forbidden(exc)
    except NotApplied as exc:
        return json_error(409, str(exc))
    except NotReflected as exc:
        response = json_error(503, f"{exc}; retry, or read without the token")
        response.headers["Retry-After"] = "1"
        return response
    if found is None:
        return json_error(404, f"wallet {wallet_id} not found")
    # Wallet ids are checked to [A-Za-z0-9._:-]: nothing in them needs JSON escaping.
    text = (
        f'{{"WalletID":"{found.wallet_id}","Balance":{money.format_micros(found.balance_micros)},'
        f'"AboveThreshold":{"true" if found.above_threshold else "false"}}}'
    )
    return web.Response(text=text, content_type=JSON)


async def healthz(request: web.Request) -> web.Response:
    """Alive: unhealthy only when a view failed, which it cannot recover from by itself."""
    ledger = request.app[LEDGER]
    alive = ledger.alive
    body = {"status": "ok" if alive else "failed", **ledger.status()}
    return web.Response(status=200 if alive else 503, text=json.dumps(body), content_type=JSON)


async def readyz(request: web.Request) -> web.Response:
    """Able to serve reads: both views caught up and not failed. A broker outage alone does not
    make the API unready (reads keep flowing from the views; deposits answer 503 fast)."""
    ledger = request.app[LEDGER]
    ready = ledger.ready
    body = {"status": "ok" if ready else "unavailable", **ledger.status()}
    return web.Response(status=200 if ready else 503, text=json.dumps(body), content_type=JSON)


async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def load_spec(path: Path = OPENAPI) -> tuple[str, bytes]:
    """The OpenAPI spec as served: its YAML text and its JSON, parsed once at start."""
    import yaml

    text = path.read_text()
    return text, json.dumps(yaml.safe_load(text), separators=(",", ":")).encode()


async def openapi_yaml(request: web.Request) -> web.Response:
    return web.Response(text=request.app[SPEC][0], content_type="application/yaml")


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SPEC][1], content_type=JSON)


def make_app(
    ledger: Ledger,
    limits: Limits = Limits(),
    *,
    auth: Authenticator | None = None,
    rate_limiter: RateLimiter | None = None,
    access_log: bool = True,
) -> web.Application:
    """The public app; the ledger is started and closed with it (cleanup context)."""
    app = web.Application(middlewares=[observe, guard], client_max_size=limits.max_body_bytes)
    app[ACCESS_LOG] = access_log and access.enabled  # the level is read once, at the start
    app[LEDGER] = ledger
    app[LIMITS] = limits
    app[IN_FLIGHT] = [0]
    app[AUTH] = auth
    app[RATE_LIMITER] = rate_limiter
    app[SPEC] = load_spec()

    async def ledger_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await ledger.start()
        if auth is not None:
            await auth.start()
        yield
        access.flush()
        if auth is not None:
            await auth.close()
        await ledger.close()

    app.cleanup_ctx.append(ledger_lifecycle)
    app.router.add_post("/deposit", deposit)
    app.router.add_get("/details/{wallet_id}", details)
    app.router.add_get("/openapi.yaml", openapi_yaml)
    app.router.add_get("/openapi.json", openapi_json)
    return app


def make_ops_app(ledger: Ledger) -> web.Application:
    """The operations app: ``/metrics``, ``/healthz``, ``/readyz`` (the ledger's lifecycle is the public app's)."""
    app = web.Application(middlewares=[observe], client_max_size=1024)
    app[LEDGER] = ledger
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


__all__ = ["make_app", "make_ops_app", "LEDGER", "LIMITS"]

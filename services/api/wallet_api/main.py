"""``wallet-api``: the API service (emitter + views + HTTP) on port 8080, operations on 8090.

Authentication is configured by environment only (``WALLET_AUTH=jwt`` and the
``WALLET_AUTH_*`` variables, see docs/security.md): it is off by default, so the
seed's curl commands work as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from decimal import Decimal

from aiohttp import web

from wallet_api.app import make_app, make_ops_app
from wallet_api.auth import AuthConfigError, Authenticator, AuthSettings, from_env
from wallet_api.ledger import Ledger
from wallet_api.ratelimit import RateLimit, RateLimiter
from wallet_api.server import AppRunner
from wallet_api.validation import Limits
from walletkit.service.logs import setup_logging
from walletkit.service.runtime import prepare_process
from walletkit.service.settings import base_parser, env_flag, kafka_settings, parse
from walletkit.stream import DEFAULT_LANES, Guarantee, StreamError
from walletkit.wallet import money
from walletkit.wallet.topology import DEFAULT_PARTITIONS

log = logging.getLogger(__name__)

DEFAULT_OPS_PORT = 8090


async def serve(
    public: web.Application,
    ops: web.Application,
    host: str,
    port: int,
    ops_port: int,
    *,
    ops_host: str | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve both apps until SIGTERM/SIGINT, then drain and clean up (the ledger closes last).

    The operations listener comes first: while the public app starts (the ledger waits for
    missing topics, the views catch up) it answers /healthz 200 and /readyz 503. A signal
    during the start ends it. ``reuse_port``: the public port is shared with other workers
    (``--workers``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    public_runner = AppRunner(public, access_log=None, shutdown_timeout=10)
    ops_runner = AppRunner(ops, access_log=None, shutdown_timeout=2)
    ops_host = ops_host or host
    public_started = False
    await ops_runner.setup()
    try:
        await web.TCPSite(ops_runner, ops_host, ops_port).start()
        setup = asyncio.ensure_future(public_runner.setup())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({setup, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not setup.done():
            setup.cancel()
            await asyncio.gather(setup, return_exceptions=True)
            log.info("received a signal while starting: stopping")
            return
        stopped.cancel()
        setup.result()  # an error of the start is raised here
        public_started = True
        await web.TCPSite(public_runner, host, port, reuse_port=reuse_port or None).start()
        log.info(
            "listening on %s:%d (API%s), operations on %s:%d (/metrics /healthz /readyz)",
            host,
            port,
            ", shared with other workers" if reuse_port else "",
            ops_host,
            ops_port,
        )
        await stop.wait()
        log.info("received a signal: draining")
    finally:
        await ops_runner.cleanup()
        if public_started:
            await public_runner.cleanup()


def make_parser() -> argparse.ArgumentParser:
    """The API's flags, each with its environment variable. (Long because the flags are many,
    one statement each: it decides nothing.)"""
    parser = base_parser(
        "wallet-api",
        "Wallet API: POST /deposit, GET /details/{wallet_id}.",
        8080,
        "./state/api",
        default_partitions=DEFAULT_PARTITIONS,
    )
    env_flag(
        parser, "--max-body-bytes", "WALLET_MAX_BODY_BYTES", "largest accepted request body", default=4096, type=int
    )
    env_flag(
        parser, "--wallet-id-max-length", "WALLET_ID_MAX_LENGTH", "longest accepted wallet id", default=64, type=int
    )
    env_flag(
        parser,
        "--amount-decimals",
        "WALLET_AMOUNT_DECIMALS",
        f"fractional digits an amount may have (0-{money.SCALE_DIGITS})",
        default=2,
        type=int,
    )
    env_flag(
        parser,
        "--max-amount",
        "WALLET_MAX_AMOUNT",
        "largest single deposit",
        default=money.DEFAULT_MAX_AMOUNT,
        type=Decimal,
    )
    env_flag(
        parser,
        "--max-in-flight",
        "WALLET_MAX_IN_FLIGHT",
        "requests served at once on /deposit and /details; more get 429",
        default=1024,
        type=int,
    )
    env_flag(
        parser,
        "--consistency-timeout-seconds",
        "WALLET_CONSISTENCY_TIMEOUT_SECONDS",
        "how long GET /details?token=... waits for the deposit to show",
        default=5.0,
        type=float,
    )
    env_flag(
        parser,
        "--ops-port",
        "WALLET_OPS_PORT",
        "port of the operations endpoints /metrics, /healthz, /readyz (never on the public port)",
        default=DEFAULT_OPS_PORT,
        type=int,
    )
    env_flag(
        parser,
        "--body-timeout-seconds",
        "WALLET_BODY_TIMEOUT_SECONDS",
        "how long a request body may take to arrive in full (408 after)",
        default=10.0,
        type=float,
    )
    env_flag(
        parser,
        "--rate-limit-rps",
        "WALLET_RATE_LIMIT_RPS",
        "requests per second each client may make on average (by principal with authentication, else by "
        "address); more get 429 with Retry-After; 0 turns it off",
        default=0.0,
        type=float,
    )
    env_flag(
        parser,
        "--rate-limit-burst",
        "WALLET_RATE_LIMIT_BURST",
        "requests a client may make at once above its rate (default: one second's worth)",
        default=0,
        type=int,
    )
    env_flag(
        parser,
        "--deposit-timeout-seconds",
        "WALLET_DEPOSIT_TIMEOUT_SECONDS",
        "how long a deposit may wait for Kafka's acknowledgement before it fails with 503",
        default=5.0,
        type=float,
    )
    env_flag(
        parser,
        "--emitter-lanes",
        "WALLET_EMITTER_LANES",
        "transactional producers committing deposits side by side (exactly_once)",
        default=DEFAULT_LANES,
        type=int,
    )
    env_flag(
        parser,
        "--access-log",
        "WALLET_ACCESS_LOG",
        "one log line per request (method, route, status, duration, request id)",
        default=True,
        type=bool,
    )
    env_flag(
        parser,
        "--workers",
        "WALLET_API_WORKERS",
        "API processes sharing the port (SO_REUSEPORT), each with its own views; the process started "
        "supervises them and serves their operations endpoints (docs/performance.md)",
        default=1,
        type=int,
    )
    env_flag(
        parser,
        "--ops-host",
        "WALLET_OPS_HOST",
        "address the operations endpoints bind (default: --http-host)",
        default=None,
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for each worker
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, AuthSettings | None]:
    """The flags, checked (a wrong one exits with its message), and the authentication settings."""
    parser = make_parser()
    args = parse(parser, argv)
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    if args.emitter_lanes < 1:
        parser.error("--emitter-lanes must be 1 or more")
    if not 0 <= args.amount_decimals <= money.SCALE_DIGITS:
        parser.error(f"--amount-decimals must be between 0 and {money.SCALE_DIGITS}")
    if not 0 < args.max_amount <= money.DEFAULT_MAX_AMOUNT:
        parser.error(f"--max-amount must be in (0, {money.DEFAULT_MAX_AMOUNT}]")
    if args.ops_port == args.http_port:
        parser.error("--ops-port must differ from --http-port: operations endpoints stay off the public port")
    if args.body_timeout_seconds <= 0:
        parser.error("--body-timeout-seconds must be more than 0")
    if args.rate_limit_rps < 0 or args.rate_limit_burst < 0:
        parser.error("--rate-limit-rps and --rate-limit-burst must not be negative")
    try:
        return args, from_env(os.environ)
    except AuthConfigError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> None:
    args, auth_settings = parse_args(argv)
    setup_logging("wallet-api", args.log_level, args.log_format)
    if args.workers > 1:
        from wallet_api.workers import supervise

        sys.exit(
            supervise(
                list(sys.argv[1:] if argv is None else argv),
                args.workers,
                args.state_dir,
                args.ops_host or args.http_host,
                args.ops_port,
                args.instance_id,
            )
        )
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        wallet_id_max_length=args.wallet_id_max_length,
        amount_decimals=args.amount_decimals,
        max_amount=args.max_amount,
        max_in_flight=args.max_in_flight,
        consistency_timeout=args.consistency_timeout_seconds,
        body_timeout=args.body_timeout_seconds,
    )
    rate = RateLimit(args.rate_limit_rps, args.rate_limit_burst or max(1, round(args.rate_limit_rps)))
    auth = Authenticator(auth_settings) if auth_settings is not None else None
    log.info(
        "authentication: %s; rate limit: %s",
        f"JWT, issuer {auth_settings.issuer}" if auth_settings else "off",
        f"{rate.rate:g}/s per client, burst {rate.burst}" if rate.enabled else "off",
    )
    settings = dataclasses.replace(
        kafka_settings(args, client_id="wallet-api"), delivery_timeout_ms=int(args.deposit_timeout_seconds * 1000)
    )
    ledger = Ledger(
        settings,
        args.state_dir,
        partitions=args.partitions,
        create_topics=args.create_topics,
        replication_factor=args.replication_factor,
        min_insync_replicas=args.min_insync_replicas,
        guarantee=Guarantee(args.processing_guarantee),
        emitter_lanes=args.emitter_lanes,
    )
    prepare_process("wallet-api")
    loop = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    public = make_app(
        ledger, limits, auth=auth, rate_limiter=RateLimiter(rate) if rate.enabled else None, access_log=args.access_log
    )
    try:
        with asyncio.Runner(loop_factory=(lambda: loop) if loop is not None else None) as runner:
            runner.run(
                serve(
                    public,
                    make_ops_app(ledger),
                    args.http_host,
                    args.http_port,
                    args.ops_port,
                    ops_host=args.ops_host,
                    reuse_port=args.reuse_port,
                )
            )
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        sys.exit(1)
    except StreamError as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("wallet-api stopped cleanly")


if __name__ == "__main__":
    main()

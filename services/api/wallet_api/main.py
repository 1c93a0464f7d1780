"""``wallet-api``: the API service (emitter + views + HTTP) on port 8080."""

from __future__ import annotations

import dataclasses
import logging
import sys
from decimal import Decimal

from aiohttp import web

from walletkit.service.logs import setup_logging
from walletkit.service.runtime import tune_gc
from walletkit.service.settings import base_parser, env_flag, kafka_settings, parse
from walletkit.stream import StreamError
from walletkit.stream.checkpoint import Guarantee
from walletkit.wallet import money
from wallet_api.app import make_app
from wallet_api.ledger import Ledger
from wallet_api.validation import Limits

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("wallet-api", "Wallet API: POST /deposit, GET /details/{wallet_id}.", 8080, "./state/api")
    env_flag(parser, "--max-body-bytes", "WALLET_MAX_BODY_BYTES", "largest accepted request body", default=4096, type=int)
    env_flag(parser, "--wallet-id-max-length", "WALLET_ID_MAX_LENGTH", "longest accepted wallet id", default=64, type=int)
    env_flag(parser, "--amount-decimals", "WALLET_AMOUNT_DECIMALS",
             f"fractional digits an amount may have (0-{money.SCALE_DIGITS})", default=2, type=int)
    env_flag(parser, "--max-amount", "WALLET_MAX_AMOUNT", "largest single deposit",
             default=money.DEFAULT_MAX_AMOUNT, type=Decimal)
    env_flag(parser, "--max-in-flight", "WALLET_MAX_IN_FLIGHT",
             "requests served at once on /deposit and /details; more get 429", default=1024, type=int)
    env_flag(parser, "--consistency-timeout-seconds", "WALLET_CONSISTENCY_TIMEOUT_SECONDS",
             "how long GET /details?token=... waits for the deposit to show", default=5.0, type=float)
    env_flag(parser, "--deposit-timeout-seconds", "WALLET_DEPOSIT_TIMEOUT_SECONDS",
             "how long a deposit may wait for Kafka's acknowledgement before it fails with 503", default=5.0,
             type=float)
    args = parse(parser, argv)
    if not 0 <= args.amount_decimals <= money.SCALE_DIGITS:
        parser.error(f"--amount-decimals must be between 0 and {money.SCALE_DIGITS}")
    if not 0 < args.max_amount <= money.DEFAULT_MAX_AMOUNT:
        parser.error(f"--max-amount must be in (0, {money.DEFAULT_MAX_AMOUNT}]")
    setup_logging("wallet-api", args.log_level)
    limits = Limits(max_body_bytes=args.max_body_bytes, wallet_id_max_length=args.wallet_id_max_length,
                    amount_decimals=args.amount_decimals, max_amount=args.max_amount,
                    max_in_flight=args.max_in_flight, consistency_timeout=args.consistency_timeout_seconds)
    settings = dataclasses.replace(kafka_settings(args, client_id="wallet-api"),
                                   delivery_timeout_ms=int(args.deposit_timeout_seconds * 1000))
    ledger = Ledger(settings, args.state_dir, partitions=args.partitions,
                    create_topics=args.create_topics, replication_factor=args.replication_factor,
                    min_insync_replicas=args.min_insync_replicas,
                    guarantee=Guarantee(args.processing_guarantee))
    tune_gc()
    loop = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    try:
        web.run_app(make_app(ledger, limits), host=args.http_host, port=args.http_port, loop=loop,
                    print=lambda *_: log.info("listening on %s:%d", args.http_host, args.http_port),
                    access_log=None, shutdown_timeout=10)
    except StreamError as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("wallet-api stopped cleanly")


if __name__ == "__main__":
    main()

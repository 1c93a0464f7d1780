"""``wallet-above-threshold``: the above_threshold processor service."""

from __future__ import annotations

import argparse
from decimal import Decimal

from wallet_above_threshold.processor import above_threshold_group
from wallet_above_threshold.threshold import MICROS, Rule
from walletkit.service.processor_main import main_for
from walletkit.service.settings import base_parser, env_flag
from walletkit.stream import GroupSpec
from walletkit.wallet import money
from walletkit.wallet.idempotency import DEFAULT_HORIZON_SECONDS
from walletkit.wallet.topology import DEFAULT_PARTITIONS, TABLE_VERSIONS_TOPIC, wait_for_topics

DEFAULT_PORT = 8082


def rule_from(args: argparse.Namespace) -> Rule:
    return Rule(
        threshold=money.decimal_to_micros(args.threshold, maximum=money.MAX_BALANCE) if args.threshold > 0 else 0,
        window=int(args.window_seconds * MICROS),
        lateness=int(args.lateness_seconds * MICROS),
    )


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The rule's settings (also read by ``walletctl rebuild above_threshold``)."""
    env_flag(
        parser,
        "--threshold",
        "WALLET_THRESHOLD",
        "amount a window must strictly exceed",
        default=Decimal(10_000),
        type=Decimal,
    )
    env_flag(parser, "--window-seconds", "WALLET_WINDOW_SECONDS", "rolling window length", default=120.0, type=float)
    env_flag(
        parser,
        "--lateness-seconds",
        "WALLET_LATENESS_SECONDS",
        "how far behind the newest deposit a deposit may arrive and still be judged exactly "
        "(the state keeps window + lateness of deposits)",
        default=60.0,
        type=float,
    )
    env_flag(
        parser,
        "--idempotency-horizon-seconds",
        "WALLET_IDEMPOTENCY_HORIZON_SECONDS",
        "how long a deposit's Idempotency-Key is remembered",
        default=float(DEFAULT_HORIZON_SECONDS),
        type=float,
    )


def spec_from(args: argparse.Namespace) -> GroupSpec:
    return above_threshold_group(rule_from(args), args.idempotency_horizon_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(
        "wallet-above-threshold",
        "Above-threshold processor: flags wallets that received more than the threshold "
        "within one rolling window (group 'above_threshold').",
        DEFAULT_PORT,
        "./state/above_threshold",
        default_partitions=DEFAULT_PARTITIONS,
    )
    add_flags(parser)
    main_for(
        "wallet-above-threshold",
        parser,
        spec_from,
        argv,
        versions_topic=TABLE_VERSIONS_TOPIC,
        wait_for_topics=wait_for_topics,
    )

"""``wallet-balance``: the balance processor service."""

from __future__ import annotations

from wallet_balance.processor import balance_group
from walletkit.service.processor_main import main_for
from walletkit.service.settings import base_parser, env_flag
from walletkit.stream import GroupSpec
from walletkit.wallet.idempotency import DEFAULT_HORIZON_SECONDS
from walletkit.wallet.topology import DEFAULT_PARTITIONS, TABLE_VERSIONS_TOPIC, wait_for_topics

DEFAULT_PORT = 8081


def add_flags(parser) -> None:
    """The rule's settings (also read by ``walletctl rebuild balance``)."""
    env_flag(
        parser,
        "--idempotency-horizon-seconds",
        "WALLET_IDEMPOTENCY_HORIZON_SECONDS",
        "how long a deposit's Idempotency-Key is remembered",
        default=float(DEFAULT_HORIZON_SECONDS),
        type=float,
    )


def spec_from(args) -> GroupSpec:
    return balance_group(args.idempotency_horizon_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(
        "wallet-balance",
        "Balance processor: keeps each wallet's balance (group 'balance').",
        DEFAULT_PORT,
        "./state/balance",
        default_partitions=DEFAULT_PARTITIONS,
    )
    add_flags(parser)
    main_for(
        "wallet-balance", parser, spec_from, argv, versions_topic=TABLE_VERSIONS_TOPIC, wait_for_topics=wait_for_topics
    )

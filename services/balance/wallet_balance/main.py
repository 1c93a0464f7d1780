"""``wallet-balance``: the balance processor service."""

from __future__ import annotations

from walletkit.service.processor_main import main_for
from walletkit.service.settings import base_parser
from wallet_balance.processor import balance_group

DEFAULT_PORT = 8081


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("wallet-balance", "Balance processor: keeps each wallet's balance (group 'balance').",
                         DEFAULT_PORT, "./state/balance")
    main_for("wallet-balance", parser, lambda _args: balance_group(), argv)


if __name__ == "__main__":
    main()

"""``wallet-balance``: the balance processor service."""

from __future__ import annotations

from walletkit.service.processor_main import main_for
from walletkit.service.settings import base_parser, env_flag
from walletkit.wallet.idempotency import DEFAULT_HORIZON_SECONDS
from wallet_balance.processor import balance_group

DEFAULT_PORT = 8081


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("wallet-balance", "Balance processor: keeps each wallet's balance (group 'balance').",
                         DEFAULT_PORT, "./state/balance")
    env_flag(parser, "--idempotency-horizon-seconds", "WALLET_IDEMPOTENCY_HORIZON_SECONDS",
             "how long a deposit's Idempotency-Key is remembered", default=float(DEFAULT_HORIZON_SECONDS), type=float)
    main_for("wallet-balance", parser, lambda args: balance_group(args.idempotency_horizon_seconds), argv)


if __name__ == "__main__":
    main()

"""The wallet seen through Kafka: deposits go to the emitter, reads come from views.

This module knows the stream toolkit and the wallet messages, not HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from walletkit.stream import Delivery, Emitter, KafkaSettings, TopicManager, View
from walletkit.wallet import money
from walletkit.wallet.codecs import (
    DEPOSIT, WALLET, WALLET_INFO_LIST, DepositRequest, wallet_balance_micros, wallet_flagged,
)
from walletkit.wallet.topology import ABOVE_THRESHOLD_TABLE, BALANCE_TABLE, DEPOSIT_TOPIC, ensure_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Receipt:
    """An acknowledged deposit."""

    deposit_id: str
    wallet_id: str
    amount_micros: int
    created_at_micros: int
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Details:
    wallet_id: str
    balance_micros: int
    above_threshold: bool


class Ledger:
    """Emits deposits and answers wallet details from the local views."""

    def __init__(self, settings: KafkaSettings, state_dir: str | Path, *, partitions: int, create_topics: bool,
                 replication_factor: int = -1) -> None:
        self._settings = settings
        self._partitions = partitions
        self._create_topics = create_topics
        self._replication = replication_factor
        state = Path(state_dir)
        self.emitter = Emitter(settings, DEPOSIT_TOPIC, DEPOSIT)
        self.balances = View(settings, BALANCE_TABLE, WALLET, state / BALANCE_TABLE)
        self.flags = View(settings, ABOVE_THRESHOLD_TABLE, WALLET_INFO_LIST, state / ABOVE_THRESHOLD_TABLE)

    async def start(self) -> None:
        """Check the topics, connect the emitter, start following both tables."""
        await asyncio.to_thread(
            ensure_topics, TopicManager(self._settings, replication_factor=self._replication), self._partitions,
            create=self._create_topics)
        await self.emitter.start()
        self.balances.start()
        self.flags.start()

    async def close(self) -> None:
        await self.emitter.close()
        await asyncio.to_thread(self.balances.stop)
        await asyncio.to_thread(self.flags.stop)

    @property
    def ready(self) -> bool:
        return self.emitter.connected and self.balances.caught_up and self.flags.caught_up

    def status(self) -> dict[str, object]:
        return {
            "producer_connected": self.emitter.connected,
            "balance_view": self.balances.state.value,
            "above_threshold_view": self.flags.state.value,
        }

    async def deposit(self, wallet_id: str, amount_micros: int) -> Receipt:
        """Emit one deposit; returns once the broker acknowledged it (EmitError if not)."""
        now = time.time_ns() // 1000
        deposit_id = uuid.uuid4().hex
        record = DepositRequest(
            WalletID=wallet_id, Amount=money.micros_to_float(amount_micros), CreatedAt=now // 1_000_000,
            AmountMicros=amount_micros, DepositID=deposit_id, CreatedAtMicros=now,
        )
        delivery = await self.emitter.emit(wallet_id, record)
        return Receipt(deposit_id, wallet_id, amount_micros, now, delivery)

    def details(self, wallet_id: str) -> Details | None:
        wallet = self.balances.get(wallet_id)
        if wallet is None:
            return None
        info = self.flags.get(wallet_id)
        return Details(wallet_id, wallet_balance_micros(wallet), wallet_flagged(info) if info is not None else False)

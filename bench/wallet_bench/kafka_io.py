"""Loading input onto the broker and reading how far a group got."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

from confluent_kafka import Consumer, Producer, TopicPartition

from walletkit.stream import KafkaSettings, partition_for
from walletkit.wallet.wallet_pb2 import DepositRequest, Wallet, WalletInfo, WalletInfoList

SCALE = 1_000_000


def wallet_id(i: int) -> str:
    return f"wallet{i:08d}"


def _produce_all(
    bootstrap: str,
    topic: str,
    partitions: int,
    records: Iterator[tuple[bytes, bytes]],
    total: int,
    tick: Callable[[str], None],
) -> list[int]:
    """Produce (key, value) records with Goka's partitioner; records per partition."""
    producer = Producer(
        {
            k: v
            for k, v in KafkaSettings(bootstrap, client_id="bench-loader")
            .producer(
                **{
                    "linger.ms": 20,
                    "batch.num.messages": 10_000,
                    "queue.buffering.max.messages": 500_000,
                    "queue.buffering.max.kbytes": 1_048_576,
                }
            )
            .items()
            if k != "logger"
        }
    )
    counts = [0] * partitions
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(err.str())

    produce = producer.produce
    for i, (key, value) in enumerate(records):
        p = partition_for(key, partitions)
        while True:
            try:
                produce(topic, value, key, partition=p, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        counts[p] += 1
        if i % 5000 == 0:
            producer.poll(0)
            tick(f"loading {topic}: {i:,}/{total:,} records ({100 * i / max(total, 1):.0f}%)")
    left = producer.flush(120)
    if left or errors:
        raise RuntimeError(f"loading {topic}: {left} records unacknowledged, errors: {errors[:3]}")
    return counts


def load_deposits(
    bootstrap: str, topic: str, partitions: int, deposits: int, wallets: int, seed: int, tick: Callable[[str], None]
) -> list[int]:
    """``deposits`` DepositRequests over ``wallets`` wallets, as the API writes them.

    One deposit per millisecond of ``CreatedAt`` in wallet round-robin-ish random
    order, amounts 100.00-1,500.00: a wallet gets a deposit every ``wallets`` ms on
    average, so with the defaults some wallets cross the 10,000-in-120 s threshold.
    """
    rng = random.Random(seed)
    base = (int(time.time()) - 3600) * SCALE

    def records() -> Iterator[tuple[bytes, bytes]]:
        for i in range(deposits):
            wid = wallet_id(rng.randrange(wallets))
            micros = rng.randint(100_00, 1500_00) * 10_000
            at = base + i * 1000
            yield (
                wid.encode(),
                DepositRequest(
                    WalletID=wid,
                    Amount=micros / SCALE,
                    CreatedAt=at // SCALE,
                    AmountMicros=micros,
                    DepositID=f"{i:032x}",
                    CreatedAtMicros=at,
                ).SerializeToString(),
            )

    return _produce_all(bootstrap, topic, partitions, records(), deposits, tick)


def load_balance_table(
    bootstrap: str, topic: str, partitions: int, wallets: int, tick: Callable[[str], None]
) -> list[int]:
    """One ``Wallet`` per wallet, as the balance processor writes it."""

    def records() -> Iterator[tuple[bytes, bytes]]:
        for i in range(wallets):
            wid = wallet_id(i)
            micros = (i % 100_000 + 1) * 10_000
            yield (
                wid.encode(),
                Wallet(WalletID=wid, Balance=micros / SCALE, BalanceMicros=micros, AppliedOffset=i).SerializeToString(),
            )

    return _produce_all(bootstrap, topic, partitions, records(), wallets, tick)


def load_threshold_table(
    bootstrap: str, topic: str, partitions: int, wallets: int, tick: Callable[[str], None]
) -> list[int]:
    """One ``WalletInfoList`` of 2 kept deposits per wallet, as above_threshold writes it."""
    base = int(time.time()) * SCALE

    def records() -> Iterator[tuple[bytes, bytes]]:
        for i in range(wallets):
            wid = wallet_id(i)
            msg = WalletInfoList(AppliedOffset=i, AboveThreshold=False)
            for k in range(2):
                at = base + k * 1_000_000
                msg.List.append(
                    WalletInfo(
                        WalletID=wid,
                        LastDepositAmount=100.0,
                        RollingPeriodCumulative=100.0 * (k + 1),
                        AboveThreshold=False,
                        CreatedAt=at // SCALE,
                        LastDepositMicros=100 * SCALE,
                        RollingPeriodCumulativeMicros=100 * SCALE * (k + 1),
                        CreatedAtMicros=at,
                        DepositOffset=i + k,
                    )
                )
            yield wid.encode(), msg.SerializeToString()

    return _produce_all(bootstrap, topic, partitions, records(), wallets, tick)


class CommittedOffsets:
    """Reads a group's committed offsets (a consumer that never joins the group)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    def read(self) -> list[int]:
        try:
            got = self._consumer.committed(self._tps, timeout=5)
        except Exception:  # noqa: BLE001 - group not known yet, broker busy: nothing committed
            return [0] * len(self._tps)
        return [max(tp.offset, 0) for tp in got]

    def close(self) -> None:
        self._consumer.close()

"""Time: the 2-minute window does not depend on the API pods' wall clocks.

A deposit topic created by the services has the broker stamp each record
(message.timestamp.type=LogAppendTime), and a deposit from our API is judged by that
time. The skewed API is played by a producer writing exactly what an API whose clock
is five minutes behind writes (its CreatedAt and CreatedAtMicros five minutes old):
libfaketime, which would shift the real process's clock, also shifts librdkafka's
timed waits, and the client then never connects. Removing the protection (topic
created with CreateTime, or deposit_time_micros ignoring the broker's time) makes the
first test fail: the two deposits are then five minutes apart.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer
from security_support import deposit, read
from support import read_topic

from walletkit.stream.partitioner import partition_for
from walletkit.wallet.wallet_pb2 import DepositRequest

SKEW_MICROS = 300 * 1_000_000


def write_skewed(bootstrap: str, wallet: str, amount: int, *, reference_fields_only: bool = False) -> None:
    at = time.time_ns() // 1000 - SKEW_MICROS
    d = DepositRequest(WalletID=wallet, Amount=float(amount), CreatedAt=at // 1_000_000)
    if not reference_fields_only:  # what our API writes
        d.AmountMicros, d.DepositID, d.CreatedAtMicros = amount * 1_000_000, uuid.uuid4().hex, at
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce("deposit", d.SerializeToString(), wallet.encode(), partition=partition_for(wallet.encode(), 8))
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def stack(module_cluster):
    module_cluster.start_all()
    return module_cluster


def test_an_api_five_minutes_behind_cannot_split_a_window(stack):
    api = stack.services["api-0"]
    write_skewed(stack.broker.bootstrap, "skewed", 6000)
    status, receipt, _ = deposit(api.port, "skewed", 6000)
    assert status == 202, receipt
    status, doc, _ = read(api.port, "skewed", consistency=receipt["ConsistencyToken"])
    assert status == 200 and doc == {"WalletID": "skewed", "Balance": 12000, "AboveThreshold": True}, doc


def test_the_receipt_reports_the_time_the_deposit_is_judged_by(stack):
    api = stack.services["api-0"]
    status, receipt, _ = deposit(api.port, "receipt-time", 1)
    assert status == 202, receipt
    stamped = {(p, o): ts for p, o, _k, _v, ts in read_topic(stack.broker.bootstrap, "deposit", timestamps=True)}
    assert receipt["CreatedAtMicros"] == stamped[(receipt["Partition"], receipt["Offset"])] * 1000
    assert receipt["CreatedAt"] == receipt["CreatedAtMicros"] // 1_000_000


def test_a_reference_record_is_judged_by_its_own_created_at(stack):
    """The contract for records with only the Go reference's fields: their CreatedAt is the time
    (a Goka emitter's clock). Five minutes old, it shares no window with a deposit made now."""
    api = stack.services["api-0"]
    write_skewed(stack.broker.bootstrap, "reference-time", 6000, reference_fields_only=True)
    status, receipt, _ = deposit(api.port, "reference-time", 6000)
    status, doc, _ = read(api.port, "reference-time", consistency=receipt["ConsistencyToken"])
    assert status == 200 and doc == {"WalletID": "reference-time", "Balance": 12000, "AboveThreshold": False}, doc

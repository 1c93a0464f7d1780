"""A failed batch whose abort cannot finish in time does not stop the processor for good.

When Kafka stops answering in the middle of a batch, the batch's records time out and so does
its ``abort_transaction`` ("retry call to resume"). librdkafka then refuses every later
transaction of that producer until an abort is called again and completes: a processor that
carried on with the producer was stuck for good after Kafka came back ("Conflicting
abort_transaction API call is already in progress" on every batch; seen when a live stack's
changelog refused writes). The processor must replace the producer (the new one's registration
ends the transaction once the coordinator answers) and count every record once.

Here the broker is frozen (SIGSTOP) right when the processor sends a batch's changelog records
and thawed 8 s later; everything is real: Apache Kafka, its transactions, RocksDB.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from support import CounterCodec, IntCodec, add, counter_table, produce_amounts, wait_for

from walletkit.stream import GroupSpec, KafkaSettings, Processor, TopicManager
from walletkit.stream.kafka import KafkaClients
from walletkit.stream.processor import LocalStores

pytestmark = pytest.mark.integration

PARTITIONS = 2
FLUSH_TIMEOUT = 2.0  # the processor's timeout for each transactional call
FROZEN = 8.0  # seconds the broker is frozen: longer than a record's and an abort's timeout
SPEC = GroupSpec(
    group="unfinished-abort",
    input_topic="unfinished-amounts",
    input_codec=IntCodec(),
    table_codec=CounterCodec(),
    callback=add,
)


class FreezesBroker(Producer):
    """A real producer; its first changelog record after ``armed`` freezes the broker first."""

    armed = threading.Event()
    frozen = threading.Event()
    broker = None

    def produce(self, *args, **kwargs):
        cls = FreezesBroker
        if cls.armed.is_set() and not cls.frozen.is_set():
            cls.frozen.set()
            cls.broker.node(1).signal(signal.SIGSTOP)
            threading.Timer(FROZEN, cls.broker.node(1).signal, (signal.SIGCONT,)).start()
        return super().produce(*args, **kwargs)


class Clients(KafkaClients):
    def producer(self, **overrides):
        return FreezesBroker(self.settings.producer(**overrides))


def produce(bootstrap: str, records: list[tuple[str, int]]) -> None:
    produce_amounts(bootstrap, SPEC.input_topic, records, PARTITIONS)


def table(bootstrap: str) -> dict[str, int]:
    return counter_table(bootstrap, SPEC.table_topic)


def test_a_processor_whose_abort_times_out_goes_on_once_kafka_answers_and_counts_every_record_once(
    broker, tmp_path: Path
):
    settings = KafkaSettings(
        broker.bootstrap, client_id="unfinished-abort-test", session_timeout_ms=30_000, delivery_timeout_ms=2000
    )
    topics = TopicManager(settings)
    topics.ensure_stream(SPEC.input_topic, PARTITIONS)
    topics.ensure_table(SPEC.table_topic, PARTITIONS)
    keys = [f"w{i:02d}" for i in range(20)]
    produce(broker.bootstrap, [(k, 1) for k in keys])
    FreezesBroker.broker = broker
    processor = Processor(SPEC, Clients(settings), LocalStores(tmp_path / "state"), flush_timeout=FLUSH_TIMEOUT)
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: table(broker.bootstrap) == {k: 1 for k in keys}, 60, "the first round to be counted")
        FreezesBroker.armed.set()
        produce(broker.bootstrap, [(k, 10) for k in keys])
        wait_for(FreezesBroker.frozen.is_set, 30, "a batch to freeze the broker")
        frozen_at = time.monotonic()
        time.sleep(FROZEN + 0.5)
        produce(broker.bootstrap, [(k, 100) for k in keys])
        wait_for(
            lambda: table(broker.bootstrap) == {k: 111 for k in keys},
            90,
            "every record counted once after Kafka answers again",
        )
        print(f"went on {time.monotonic() - frozen_at - FROZEN:.1f} s after the broker thawed")
        assert thread.is_alive() and processor.ready, "the processor goes on"
        totals = {
            k: v["n"]
            for part in processor.tables.values()
            for k, v in ((key.decode(), CounterCodec().decode(raw)) for key, raw in part.store.items())
        }
        assert totals == {k: 111 for k in keys}, "the local stores agree with the changelog"
    finally:
        broker.node(1).signal(signal.SIGCONT)
        processor.stop()
        thread.join(30)

"""A transactional call that never returns does not stop a processor or an emitter lane.

librdkafka's ``send_offsets_to_transaction`` can wait far past its timeout when the group
coordinator goes away (librdkafka issues 5456 and 5511, open in 2.16): in CI a balance
processor whose coordinator node was killed stopped for good, alive, with nothing in its log.
That cannot be provoked on demand, so here the producer's call blocks the way that one does
(until the test ends); everything else is real: the broker, its transactions, RocksDB.

The processor must give the call up once it overran its timeout, replace the producer (whose
registration fences the stuck one and aborts its transaction) and redo the batch: every record
counted exactly once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY
from support import CounterCodec, IntCodec, add, counter_table, produce_amounts, read_topic, wait_for

from walletkit.stream import GroupSpec, KafkaSettings, Processor, TopicManager
from walletkit.stream import kafka as kafka_module
from walletkit.stream.kafka import KafkaClients
from walletkit.stream.processor import LocalStores

pytestmark = pytest.mark.integration

#: How long past its timeout a call may run here before it counts as stuck (5 s in the
#: services): shorter, so the tests wait less.
GRACE = 1.0


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(kafka_module, "STUCK_GRACE", GRACE)


PARTITIONS = 2
FLUSH_TIMEOUT = 2.0  # the processor's timeout for each transactional call
SPEC = GroupSpec(
    group="stuck-client", input_topic="stuck-amounts", input_codec=IntCodec(), table_codec=CounterCodec(), callback=add
)


def hangs_once(method: str) -> type[Producer]:
    """A real transactional producer whose first ``method`` call after ``armed`` is set blocks
    until ``release`` (set when the test ends, as the real call returns much later) before it
    is sent at all, its timeout ignored (the librdkafka bug)."""

    class HangsOnce(Producer):
        armed = threading.Event()
        hung = threading.Event()
        release = threading.Event()

    def call(self, *args, **kwargs):
        if HangsOnce.armed.is_set() and not HangsOnce.hung.is_set():
            HangsOnce.hung.set()
            HangsOnce.release.wait(120)
        return getattr(Producer, method)(self, *args, **kwargs)

    setattr(HangsOnce, method, call)
    return HangsOnce


#: The processor's producer: its send_offsets_to_transaction hangs once.
HangsOnce = hangs_once("send_offsets_to_transaction")
#: An emitter lane's producer: its commit_transaction hangs once (so that transaction never commits).
CommitHangsOnce = hangs_once("commit_transaction")


class StuckClients(KafkaClients):
    def producer(self, **overrides):
        return HangsOnce(self.settings.producer(**overrides))


def produce(bootstrap: str, records: list[tuple[str, int]]) -> None:
    produce_amounts(bootstrap, SPEC.input_topic, records, PARTITIONS)


def table(bootstrap: str) -> dict[str, int]:
    return counter_table(bootstrap, SPEC.table_topic)


def abandoned() -> float:
    return (
        REGISTRY.get_sample_value("stream_processor_transactions_total", {"group": SPEC.group, "outcome": "abandoned"})
        or 0.0
    )


def test_a_processor_whose_send_offsets_never_returns_replaces_its_producer_and_counts_every_record_once(
    broker, tmp_path: Path
):
    settings = KafkaSettings(broker.bootstrap, client_id="stuck-test", session_timeout_ms=6000)
    topics = TopicManager(settings)
    topics.ensure_stream(SPEC.input_topic, PARTITIONS)
    topics.ensure_table(SPEC.table_topic, PARTITIONS)
    keys = [f"w{i:02d}" for i in range(20)]
    produce(broker.bootstrap, [(k, 1) for k in keys])
    processor = Processor(SPEC, StuckClients(settings), LocalStores(tmp_path / "state"), flush_timeout=FLUSH_TIMEOUT)
    before = abandoned()
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: table(broker.bootstrap) == {k: 1 for k in keys}, 60, "the first round to be counted")
        HangsOnce.armed.set()
        produce(broker.bootstrap, [(k, 10) for k in keys])
        wait_for(HangsOnce.hung.is_set, 30, "a batch's send_offsets_to_transaction to hang")
        hung_at = time.monotonic()
        produce(broker.bootstrap, [(k, 100) for k in keys])
        # Given up after its timeout and the grace, the batch is redone with a new producer.
        wait_for(
            lambda: table(broker.bootstrap) == {k: 111 for k in keys},
            FLUSH_TIMEOUT + GRACE + 60,
            "every record counted once after the hang",
        )
        print(f"went on {time.monotonic() - hung_at:.1f} s after the call hung")
        assert abandoned() == before + 1, "the stuck transaction is counted as abandoned"
        assert thread.is_alive() and processor.ready, "the processor goes on"
        totals = {
            k: v["n"]
            for part in processor.tables.values()
            for k, v in ((key.decode(), CounterCodec().decode(raw)) for key, raw in part.store.items())
        }
        assert totals == {k: 111 for k in keys}, "the local stores agree with the changelog"
    finally:
        HangsOnce.release.set()
        processor.stop()
        thread.join(30)


def test_an_emitter_lane_whose_commit_never_returns_fails_that_batch_and_goes_on_with_a_new_producer(
    broker, monkeypatch
):
    import asyncio

    from walletkit.stream import emitter as emitter_module
    from walletkit.stream.emitter import Emitter
    from walletkit.stream.errors import EmitError

    monkeypatch.setattr(emitter_module, "Producer", CommitHangsOnce)
    settings = KafkaSettings(broker.bootstrap, client_id="stuck-emitter", delivery_timeout_ms=3000)
    TopicManager(settings).ensure_stream("stuck-events", PARTITIONS)

    async def scenario() -> tuple[list, float]:
        emitter = Emitter(settings, "stuck-events", IntCodec(), transactional_id="stuck-emitter", lanes=1)
        await emitter.start()
        try:
            await asyncio.gather(*(emitter.emit(f"k{i}", i) for i in range(10)))
            CommitHangsOnce.armed.set()
            with pytest.raises(EmitError, match="unknown|in time"):
                await emitter.emit("hung", 1000)
            assert CommitHangsOnce.hung.is_set()
            hung_at = time.monotonic()
            # The lane is not lost: the next records commit once the stuck call was given up.
            while True:
                try:
                    later = await emitter.emit("after", 2000)
                    break
                except EmitError:
                    assert time.monotonic() - hung_at < 60, "the emitter lane never recovered"
            return [later], time.monotonic() - hung_at
        finally:
            CommitHangsOnce.release.set()
            await emitter.close()

    deliveries, recovered = asyncio.run(scenario())
    print(f"the lane committed again {recovered:.1f} s after its commit hung")
    values = sorted(int(v) for _, _, _, v in read_topic(broker.bootstrap, "stuck-events"))
    assert values == [*range(10), 2000], "each acknowledged record once; the hung one (never committed) absent"

"""Measure where Tansu (the embedded default of ``make run``) differs from Apache Kafka.

``python -m walletkit.devstack.compare_brokers`` starts one of each on loopback, runs the same
probes against both and prints a table; docs/architecture.md quotes it. Each probe is a few
client calls whose answer Apache Kafka's protocol defines, so a row that differs is a
behaviour the code must not depend on.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from walletkit.devstack.broker import make_broker

_QUIET = {"log_level": 0}


def _topic(bootstrap: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, **_QUIET})
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(15)
    time.sleep(0.5)  # metadata propagates
    return name


def _produce(bootstrap: str, topic: str, count: int, partition: int = 0) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, **_QUIET})
    for i in range(count):
        p.produce(topic, b"v", str(i).encode(), partition=partition)
    assert p.flush(15) == 0


def list_offsets_latest(bootstrap: str) -> str:
    """ListOffsets(latest) after one producer batch of 10 records: Kafka says 10."""
    topic = _topic(bootstrap)
    _produce(bootstrap, topic, 10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", **_QUIET})
    try:
        return f"end offset {c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]} for 10 records"
    finally:
        c.close()


def read_committed_hides_aborted(bootstrap: str) -> str:
    """Records of an aborted transaction, read with isolation.level=read_committed: Kafka shows none."""
    topic = _topic(bootstrap)
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"probe-{uuid.uuid4().hex[:6]}", **_QUIET})
    p.init_transactions(15)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, b"aborted", str(i).encode(), partition=0)
    p.flush(10)
    p.abort_transaction(15)
    _produce(bootstrap, topic, 1)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "probe-rc",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            **_QUIET,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    seen, deadline = [], time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                continue
            seen.append(m.value())
    finally:
        c.close()
    return f"{seen.count(b'aborted')} aborted records visible of 5, {seen.count(b'v')} committed"


def _join_seconds(bootstrap: str, topic: str, group: str, extra: dict | None = None) -> tuple[float, Consumer]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "session.timeout.ms": 10000,
            "auto.offset.reset": "earliest",
            **(extra or {}),
            **_QUIET,
        }
    )
    started = time.monotonic()
    c.subscribe([topic])
    while not c.assignment() and time.monotonic() - started < 30:
        c.poll(0.1)
    return time.monotonic() - started, c


def first_join(bootstrap: str) -> str:
    """A new group's first member, session.timeout.ms 10000: time until it holds partitions."""
    topic = _topic(bootstrap, 4)
    seconds, c = _join_seconds(bootstrap, topic, f"probe-join-{uuid.uuid4().hex[:6]}")
    parts = len(c.assignment())
    c.close()
    return f"{seconds:.1f} s to the first assignment ({parts} partitions)"


def cooperative_second_member(bootstrap: str) -> str:
    """cooperative-sticky, two members of one group on 4 partitions: Kafka gives each 2."""
    topic = _topic(bootstrap, 4)
    group = f"probe-coop-{uuid.uuid4().hex[:6]}"
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    _, a = _join_seconds(bootstrap, topic, group, conf)
    b = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 10000, **conf, **_QUIET})
    b.subscribe([topic])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(b.assignment()) < 2:
        a.poll(0.1)
        b.poll(0.1)
    out = f"members hold {len(a.assignment())} and {len(b.assignment())} partitions after {20 - max(0, deadline - time.monotonic()):.0f} s"
    a.close()
    b.close()
    return out


def topic_config_retention(bootstrap: str) -> str:
    """DescribeConfigs of a new topic: Kafka lists retention.ms (default 604800000)."""
    topic = _topic(bootstrap)
    admin = AdminClient({"bootstrap.servers": bootstrap, **_QUIET})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(10)
    value = configs.get("retention.ms")
    return f"retention.ms {'= ' + value.value if value is not None else 'absent'} ({len(configs)} configs listed)"


def empty_fetch_wait(bootstrap: str) -> str:
    """A consumer at the end of an idle partition, then one record produced: time until it arrives
    with fetch.wait.max.ms 500. Kafka answers the waiting fetch as soon as the record is written."""
    topic = _topic(bootstrap)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "probe-wait",
            "fetch.wait.max.ms": 500,
            "enable.partition.eof": True,
            **_QUIET,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # reach the end first
            m = c.poll(0.2)
            if m is not None and m.error() and m.error().code() == KafkaError._PARTITION_EOF:
                break
        samples = []
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **_QUIET})
        for i in range(10):
            time.sleep(0.137)  # not in step with the fetch cycle
            p.produce(topic, b"x", b"k", partition=0)
            p.flush(5)
            sent = time.monotonic()
            while True:
                m = c.poll(1.0)
                if m is not None and not m.error():
                    samples.append((time.monotonic() - sent) * 1000)
                    break
        samples.sort()
        return f"record visible after median {samples[len(samples) // 2]:.0f} ms, max {samples[-1]:.0f} ms (10 tries)"
    finally:
        c.close()


def static_member_rejoin(bootstrap: str) -> str:
    """A static member (group.instance.id) closes and rejoins within its session; a second member
    must keep its partitions. Kafka: both members hold their partitions again at once."""
    topic = _topic(bootstrap, 4)
    group = f"probe-static-{uuid.uuid4().hex[:6]}"

    def member(name: str) -> Consumer:
        c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "group.instance.id": name,
                "session.timeout.ms": 10000,
                **_QUIET,
            }
        )
        c.subscribe([topic])
        return c

    a, b = member("a"), member("b")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(a.assignment()) < 2 or len(b.assignment()) < 2):
        a.poll(0.1)
        b.poll(0.1)
    a.close()
    a = member("a")
    started = time.monotonic()
    while time.monotonic() - started < 15 and len(a.assignment()) < 2:
        a.poll(0.1)
        b.poll(0.1)
    out = (
        f"rejoined member holds {len(a.assignment())} partitions after {time.monotonic() - started:.1f} s, "
        f"the other {len(b.assignment())}"
    )
    a.close()
    b.close()
    return out


PROBES: list[tuple[str, Callable[[str], str]]] = [
    ("ListOffsets latest", list_offsets_latest),
    ("read_committed and aborted records", read_committed_hides_aborted),
    ("first join of a new group", first_join),
    ("cooperative-sticky, second member", cooperative_second_member),
    ("static member rejoins", static_member_rejoin),
    ("topic configs", topic_config_retention),
    ("fetch held on an idle partition", empty_fetch_wait),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m walletkit.devstack.compare_brokers", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--brokers", default="apache,tansu", help="which brokers to probe (default apache,tansu)")
    args = p.parse_args(argv)
    kinds = args.brokers.split(",")
    results: dict[str, dict[str, str]] = {}
    for kind in kinds:
        print(f"probing {kind} ...", file=sys.stderr, flush=True)
        broker = make_broker(kind).start()
        try:
            for name, probe in PROBES:
                try:
                    results.setdefault(name, {})[kind] = probe(broker.bootstrap)
                except Exception as exc:  # noqa: BLE001 - a failing probe is itself a finding
                    results.setdefault(name, {})[kind] = f"failed: {exc}"
                print(f"  {name}: {results[name][kind]}", file=sys.stderr, flush=True)
        finally:
            broker.stop()
    print("| behaviour | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, _ in PROBES:
        print(f"| {name} | " + " | ".join(results[name].get(k, "") for k in kinds) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

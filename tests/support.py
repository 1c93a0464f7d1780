"""Helpers of the integration tests: writing deposits, reading tables, a model."""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from walletkit.devstack.net import http_get
from walletkit.devstack.processes import console_script
from walletkit.stream.partitioner import partition_for
from walletkit.wallet.codecs import WALLET, WALLET_INFO_LIST, DepositRequest, wallet_balance_micros, wallet_flagged
from walletkit.wallet.money import micros_to_float


def missing_tool(message: str):
    """A test whose tool is missing fails, CI or not: a missing tool is never a pass. `make test`
    installs the Python ones and .ci/run the machine's."""
    import pytest

    pytest.fail(f"{message} (`make test` installs the Python tools, .ci/run the machine's)", pytrace=False)


def require_module(name: str, install_hint: str):
    """Import a test dependency, or fail saying how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing_tool(f"{name} is not importable ({exc}); install it: {install_hint}")


@dataclass(frozen=True)
class Deposit:
    wallet: str
    micros: int
    at_micros: int


class DepositWriter:
    """Writes deposits straight to the ``deposit`` topic, as an emitter would."""

    def __init__(self, bootstrap: str, partitions: int = 8, **config) -> None:
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5, **config}
        )
        self.partitions = partitions
        self.acked: list[Deposit] = []
        self.failed = 0

    def write(self, deposits: Iterable[Deposit], *, go_style: bool = False) -> None:
        for d in deposits:
            if go_style:  # what the Go emitter writes: fields 1-3 only, CreatedAt in seconds
                msg = DepositRequest(
                    WalletID=d.wallet, Amount=micros_to_float(d.micros), CreatedAt=d.at_micros // 1_000_000
                )
            else:
                msg = DepositRequest(
                    WalletID=d.wallet,
                    Amount=micros_to_float(d.micros),
                    CreatedAt=d.at_micros // 1_000_000,
                    AmountMicros=d.micros,
                    CreatedAtMicros=d.at_micros,
                )
            key = d.wallet.encode()

            def delivered(err, msg, d=d, go_style=go_style):
                if err is None:
                    # Timed as the processors time it: our records by the broker's LogAppendTime.
                    ts_type, ts_ms = msg.timestamp()
                    if not go_style and ts_type == TIMESTAMP_LOG_APPEND_TIME:
                        d = Deposit(d.wallet, d.micros, ts_ms * 1000)
                    self.acked.append(d)
                else:
                    self.failed += 1

            while True:
                try:
                    self.producer.produce(
                        "deposit",
                        msg.SerializeToString(),
                        key,
                        partition=partition_for(key, self.partitions),
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0, "deposits not acknowledged"


def create_topics(bootstrap: str, partitions: int = 8) -> None:
    """The wallet topics, created as the services create them (before any client auto-creates one)."""
    from walletkit.stream import KafkaSettings, TopicManager
    from walletkit.wallet.topology import ensure_topics

    ensure_topics(TopicManager(KafkaSettings(bootstrap)), partitions, create=True)


def read_topic(
    bootstrap: str, topic: str, timeout: float = 30.0, *, timestamps: bool = False
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of ``topic`` as (partition, offset, key, value), read to the end of each partition
    (with ``timestamps``, a fifth item: the broker's LogAppendTime in ms, or None)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )  # what processors and views read
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, pending = [], set(range(partitions))
    deadline = time.monotonic() + timeout
    try:
        while pending:
            assert time.monotonic() < deadline, f"{topic}: partitions {pending} never reached their end"
            for m in c.consume(1000, 0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    continue
                if timestamps:
                    ts_type, ts_ms = m.timestamp()
                    out.append(
                        (
                            m.partition(),
                            m.offset(),
                            m.key(),
                            m.value(),
                            ts_ms if ts_type == TIMESTAMP_LOG_APPEND_TIME else None,
                        )
                    )
                else:
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
    finally:
        c.close()
    return out


def latest_by_key(records) -> dict[str, bytes]:
    """What compaction keeps and a Goka view reads: the last record per wallet (side entries,
    ``<wallet>\0...``, are the processors' bookkeeping, not wallets)."""
    latest: dict[str, bytes] = {}
    for _p, _o, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        if b"\0" not in key:
            latest[key.decode()] = value
    return latest


def balances_in_table(bootstrap: str, table: str = "balance-table") -> dict[str, int]:
    return {k: wallet_balance_micros(WALLET.decode(v)) for k, v in latest_by_key(read_topic(bootstrap, table)).items()}


def flags_in_table(bootstrap: str) -> dict[str, bool]:
    return {
        k: wallet_flagged(WALLET_INFO_LIST.decode(v))
        for k, v in latest_by_key(read_topic(bootstrap, "above_threshold-table")).items()
    }


def expected_balances(deposits: Iterable[Deposit]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for d in deposits:
        out[d.wallet] += d.micros
    return dict(out)


def expected_flags(deposits: Iterable[Deposit]) -> dict[str, bool]:
    """The threshold flag of every wallet, by the rule as DESIGN.md states it."""
    from wallet_above_threshold.threshold import Rule, flagged_by_definition

    per_wallet: dict[str, list[tuple[int, int]]] = {}
    for d in deposits:
        per_wallet.setdefault(d.wallet, []).append((d.at_micros, d.micros))
    return {w: flagged_by_definition(ds, Rule()) for w, ds in per_wallet.items()}


def serve_cluster(request, root, cluster):
    """Yield ``cluster`` to a test; print its logs if the test failed; stop it."""
    yield cluster
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        # A service that is alive but stuck says where: each prints its threads' stacks.
        if any([proc.dump_stacks() for proc in cluster.services.values()]):
            time.sleep(0.5)
        dump_logs(root)
    cluster.stop()


def dump_logs(root, lines: int = 40) -> None:
    """Print the tail of every log under ``root/logs`` (for a failed test's report).

    A stack dump (``ServiceProcess.dump_stacks``) is printed whole, after the ``lines``
    log lines before it.
    """
    from pathlib import Path

    for log in sorted((Path(root) / "logs").glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        dump = next((i for i, line in enumerate(text) if line.startswith(("Thread 0x", "Current thread 0x"))), None)
        tail = text[-lines:] if dump is None else text[max(0, dump - lines) :]
        print(f"\n===== {log.name} (last {len(tail)} lines) =====")
        print("\n".join(tail))


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is True:
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def balances_match(bootstrap: str, expected: dict[str, int], table: str = "balance-table"):
    """True, or a short description of the mismatches (for wait_for's message)."""
    actual = balances_in_table(bootstrap, table)
    wrong = {w: (actual.get(w), m) for w, m in expected.items() if actual.get(w) != m}
    extra = set(actual) - set(expected)
    if not wrong and not extra:
        return True
    return f"{len(wrong)} wrong (actual, expected) e.g. {dict(list(wrong.items())[:3])}, {len(extra)} unexpected"


def post_deposit(
    port: int, body: dict | bytes, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, dict, dict]:
    """POST /deposit as `curl -d` does it (form content type, JSON body): (status, JSON, headers)."""
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/deposit",
        data=data,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def details(api_port: int, wallet: str) -> tuple[int, bytes]:
    return http_get(f"http://127.0.0.1:{api_port}/details/{wallet}")


def details_json(api_port: int, wallet: str) -> dict:
    status, body = details(api_port, wallet)
    assert status == 200, (status, body)
    return json.loads(body)


def scraped_metric(port: int, name: str, **labels: str) -> float | None:
    """A sample's value on ``http://127.0.0.1:<port>/metrics`` (the one whose labels include
    ``labels``), None when there is none."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, (status, body[:200])
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def ops_status(port: int) -> dict:
    """A processor's /healthz body: state, partitions, restoring, standby, guarantee."""
    _status, body = http_get(f"http://127.0.0.1:{port}/healthz")
    return json.loads(body)


# -- a domain-free counter for the stream toolkit's own tests ---------------------------


class CounterCodec:
    """Table values: {"n": total, "o": applied offset} as JSON."""

    def encode(self, value: dict) -> bytes:
        return json.dumps(value).encode()

    def decode(self, data: bytes) -> dict:
        return json.loads(data)

    def applied_offset(self, value: dict) -> int:
        return value.get("o", -1)

    def stamp(self, value: dict, offset: int) -> None:
        value["o"] = offset


class IntCodec:
    """Input records: a decimal integer (anything else is skipped)."""

    def encode(self, value: int) -> bytes:
        return str(value).encode()

    def decode(self, data: bytes) -> int:
        from walletkit.stream import SkipRecord

        try:
            return int(data)
        except (TypeError, ValueError) as exc:
            raise SkipRecord("not_an_int", repr(data)) from exc


def add(ctx, amount: int) -> None:
    """The counter's callback: adds the record to its key's total."""
    value = ctx.value() or {"n": 0}
    value["n"] += amount
    ctx.set_value(value)


def produce_amounts(bootstrap: str, topic: str, records: Iterable[tuple[str, int]], partitions: int) -> None:
    """The counter's input: each (key, amount) in its key's partition, all acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for key, amount in records:
        k = key.encode()
        while True:
            try:
                producer.produce(topic, str(amount).encode(), k, partition=partition_for(k, partitions))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0


def counter_table(bootstrap: str, topic: str) -> dict[str, int]:
    """A counter's changelog as a read_committed reader sees it: each key's latest total."""
    return {k: CounterCodec().decode(v)["n"] for k, v in latest_by_key(read_topic(bootstrap, topic)).items()}


def walletctl(cluster, *args: str) -> subprocess.CompletedProcess:
    """``walletctl <args>`` against ``cluster``'s broker, as an operator runs it."""
    return subprocess.run(
        [console_script("walletctl"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cluster.env(), "PATH": "/usr/bin:/bin"},
    )


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (absent: nothing committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        consumer.close()

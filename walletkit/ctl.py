"""walletctl: look at and repair a running wallet deployment from its Kafka cluster.

    walletctl lag                      how far each processor group is behind the deposits
    walletctl get balance <wallet>     one table value, decoded, with the offsets it reflects
    walletctl topics check             the topics exist, agree and are configured as the services need
    walletctl reset <group> --dry-run  what a reset would delete; without --dry-run, do it

Connects like the services do: ``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_CONFIG`` and the TLS/SASL
variables (see docs/operations.md). Exit codes: 0 fine, 1 a problem was found or refused,
2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic
from google.protobuf.json_format import MessageToDict

from walletkit.service.settings import env_flag, kafka_settings
from walletkit.stream.kafka import KafkaSettings
from walletkit.stream.partitioner import partition_for
from walletkit.stream.topics import TopicManager
from walletkit.wallet.codecs import WALLET, WALLET_INFO_LIST
from walletkit.wallet.topology import (
    ABOVE_THRESHOLD_GROUP, ABOVE_THRESHOLD_TABLE, ALL_TOPICS, BALANCE_GROUP, BALANCE_TABLE, DEPOSIT_TOPIC,
)

#: The processor groups: table topic and value codec of each.
GROUPS = {BALANCE_GROUP: (BALANCE_TABLE, WALLET), ABOVE_THRESHOLD_GROUP: (ABOVE_THRESHOLD_TABLE, WALLET_INFO_LIST)}
TIMEOUT = 15.0


class Refused(Exception):
    """Something walletctl will not do, or found wrong; the message says what to do."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="walletctl", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    env_flag(parser, "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "Kafka bootstrap servers", required=True)
    env_flag(parser, "--kafka-config", "KAFKA_CONFIG", "extra librdkafka properties, key=value,...", default="")
    sub = parser.add_subparsers(dest="command", required=True)
    lag = sub.add_parser("lag", help="records each processor group has still to process, per partition")
    lag.add_argument("--group", choices=sorted(GROUPS), help="one group only")
    lag.add_argument("--json", action="store_true", help="machine-readable output")
    get = sub.add_parser("get", help="a wallet's value in a table, decoded, with its applied offset")
    get.add_argument("table", choices=sorted(GROUPS), help="the group whose table to read")
    get.add_argument("wallet")
    topics = sub.add_parser("topics", help="topic checks")
    topics.add_argument("action", choices=["check"])
    reset = sub.add_parser("reset", help="forget a group's table and offsets, so it rebuilds from the deposits")
    reset.add_argument("group", choices=sorted(GROUPS))
    reset.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    args = parser.parse_args(argv)
    args.session_timeout_ms, args.instance_id = 10_000, None
    settings = kafka_settings(args, client_id="walletctl")
    commands = {"lag": cmd_lag, "get": cmd_get, "topics": cmd_topics_check, "reset": cmd_reset}
    try:
        sys.exit(commands[args.command](settings, args))
    except Refused as exc:
        print(f"walletctl {args.command}: {exc}", file=sys.stderr)
        sys.exit(1)
    except KafkaException as exc:
        print(f"walletctl {args.command}: Kafka: {_describe(exc)}; check KAFKA_BOOTSTRAP_SERVERS and that the "
              "cluster is up", file=sys.stderr)
        sys.exit(1)


# -- lag -------------------------------------------------------------------------

def cmd_lag(settings: KafkaSettings, args: argparse.Namespace) -> int:
    from wallet_operator.errors import OperatorError
    from wallet_operator.kafka_lag import LagReader

    reader = LagReader(settings.admin(), timeout=TIMEOUT, client_id="walletctl")
    try:
        snapshots = [reader.read(group, DEPOSIT_TOPIC) for group in ([args.group] if args.group else sorted(GROUPS))]
    except OperatorError as exc:
        raise Refused(str(exc)) from exc
    finally:
        reader.close()
    if args.json:
        print(json.dumps([{"group": s.group, "topic": s.topic, "total_lag": s.total_lag, "partitions": [
            {"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag} for p in s.partitions]}
            for s in snapshots], indent=2))
        return 0
    print(f"{'GROUP':16} {'PARTITION':>9} {'COMMITTED':>10} {'END':>10} {'LAG':>8}")
    for s in snapshots:
        for p in s.partitions:
            committed = "-" if p.committed is None else str(p.committed)
            print(f"{s.group:16} {p.partition:>9} {committed:>10} {p.end:>10} {p.lag:>8}")
        print(f"{s.group:16} {'total':>9} {'':>10} {'':>10} {s.total_lag:>8}")
    return 0


# -- get -------------------------------------------------------------------------

def cmd_get(settings: KafkaSettings, args: argparse.Namespace) -> int:
    topic, codec = GROUPS[args.table]
    counts = TopicManager(settings, timeout=TIMEOUT).partitions([topic])
    if topic not in counts:
        raise Refused(f"topic {topic!r} does not exist: is the {args.table} processor deployed?")
    key = args.wallet.encode()
    partition = partition_for(key, counts[topic])
    found = latest_record(settings, topic, partition, key)
    if found is None:
        raise Refused(f"no value for wallet {args.wallet!r} in {topic}[{partition}] (no deposit applied yet)")
    offset, raw = found
    value = codec.decode(raw)
    print(json.dumps({"table": topic, "wallet": args.wallet, "partition": partition, "changelog_offset": offset,
                      "applied_offset": codec.applied_offset(value),
                      "value": MessageToDict(value, preserving_proto_field_name=True)}, indent=2))
    return 0


def latest_record(settings: KafkaSettings, topic: str, partition: int, key: bytes) -> tuple[int, bytes] | None:
    """(offset, value) of ``key``'s last committed record in ``topic[partition]``; None if none or deleted."""
    consumer = Consumer(settings.reader(**{"enable.partition.eof": True}))
    try:
        tp = TopicPartition(topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        found: tuple[int, bytes] | None = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for m in consumer.consume(10_000, 1.0):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        return found
                    raise Refused(f"reading {topic}[{partition}]: {m.error().str()}")
                if m.key() == key:
                    found = None if m.value() is None else (m.offset(), m.value())
        raise Refused(f"reading {topic}[{partition}] took longer than 300 s")
    finally:
        consumer.close()


# -- topics check ----------------------------------------------------------------

#: Settings each topic must have for the guarantees to hold (config name -> accepted values).
REQUIRED_CONFIG: dict[str, dict[str, set[str]]] = {
    DEPOSIT_TOPIC: {"cleanup.policy": {"delete"}, "message.timestamp.type": {"LogAppendTime"},
                    "unclean.leader.election.enable": {"false"}},
    BALANCE_TABLE: {"cleanup.policy": {"compact"}, "unclean.leader.election.enable": {"false"}},
    ABOVE_THRESHOLD_TABLE: {"cleanup.policy": {"compact"}, "unclean.leader.election.enable": {"false"}},
}


def cmd_topics_check(settings: KafkaSettings, _args: argparse.Namespace) -> int:
    problems = check_topics(settings)
    for line in problems:
        print(f"PROBLEM {line}")
    if not problems:
        print(f"OK {', '.join(ALL_TOPICS)}: present, co-partitioned and configured as the services need")
    return 1 if problems else 0


def check_topics(settings: KafkaSettings) -> list[str]:
    admin = AdminClient(settings.admin())
    metadata = admin.list_topics(timeout=TIMEOUT)
    problems: list[str] = []
    counts: dict[str, int] = {}
    replicas: dict[str, int] = {}
    for topic in ALL_TOPICS:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            problems.append(f"{topic}: missing (the services create it unless WALLET_CREATE_TOPICS=false; "
                            "with Strimzi, check the KafkaTopic resources)")
            continue
        counts[topic] = len(found.partitions)
        replicas[topic] = min(len(p.replicas) for p in found.partitions.values())
        print(f"   {topic}: {counts[topic]} partitions, replication {replicas[topic]}")
    if len(set(counts.values())) > 1:
        problems.append("partition counts differ (" + ", ".join(f"{t}={n}" for t, n in counts.items())
                        + "): a wallet's deposits and table values would land on different members")
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in counts]
    for resource, future in admin.describe_configs(resources, request_timeout=TIMEOUT).items():
        config = future.result()
        topic = resource.name
        for name, accepted in REQUIRED_CONFIG[topic].items():
            value = config[name].value if name in config else None
            if value not in accepted:
                problems.append(f"{topic}: {name}={value}, needs {' or '.join(sorted(accepted))}")
        min_isr = int(config["min.insync.replicas"].value) if "min.insync.replicas" in config else 1
        if replicas.get(topic, 1) > 1 and min_isr < 2:
            problems.append(f"{topic}: min.insync.replicas={min_isr} with replication {replicas[topic]}: one "
                            "broker alone may acknowledge a write (set 2)")
    return problems


# -- reset -----------------------------------------------------------------------

def cmd_reset(settings: KafkaSettings, args: argparse.Namespace) -> int:
    group = args.group
    topic, _codec = GROUPS[group]
    admin = AdminClient(settings.admin())
    description = admin.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result()
    members = list(description.members)
    if members:
        raise Refused(f"group {group!r} has {len(members)} running member(s) "
                      f"({', '.join(m.group_instance_id or m.member_id for m in members)}): scale the {group} "
                      "StatefulSet to 0 first, so nothing writes the table while it is reset")
    counts = TopicManager(settings, timeout=TIMEOUT).partitions([topic, DEPOSIT_TOPIC])
    if DEPOSIT_TOPIC not in counts:
        raise Refused(f"topic {DEPOSIT_TOPIC!r} does not exist: there is nothing to rebuild {topic!r} from")
    trimmed = deposits_trimmed(settings, counts[DEPOSIT_TOPIC])
    if trimmed:
        raise Refused(f"{DEPOSIT_TOPIC!r} no longer holds its first records (partitions {trimmed} start after "
                      f"offset 0): a rebuild would miss those deposits. Restore {topic!r} from a backup instead")
    layout = topic_layout(admin, topic) if topic in counts else None
    plan = [f"delete the committed offsets of group {group!r} on {DEPOSIT_TOPIC!r}",
            f"delete and recreate topic {topic!r} ({counts.get(topic, counts.get(DEPOSIT_TOPIC, 0))} partitions, "
            "compacted): its values are rebuilt from every deposit"]
    for step in plan:
        print(("would " if args.dry_run else "") + step)
    print("then: the processors wipe their local state of the old topic when they start (its topic id "
          "changed), and the API's views rebuild their replicas the same way")
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    try:
        admin.delete_consumer_groups([group], request_timeout=TIMEOUT)[group].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            raise
    if topic in counts:
        admin.delete_topics([topic], operation_timeout=TIMEOUT)[topic].result()
        topics = TopicManager(settings, timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while topic in topics.partitions([topic]):
            if time.monotonic() > deadline:
                raise Refused(f"topic {topic!r} was deleted but still shows in metadata; run reset again")
            time.sleep(0.2)
    recreate(admin, layout or NewTopic(topic, counts[DEPOSIT_TOPIC], config={
        "cleanup.policy": "compact", "unclean.leader.election.enable": "false"}))
    print(f"reset {group}: done; start the {group} processors to rebuild {topic}")
    return 0


def deposits_trimmed(settings: KafkaSettings, partitions: int) -> list[int]:
    """Partitions of the deposit topic whose log no longer starts at offset 0."""
    consumer = Consumer(settings.reader())
    try:
        return [p for p in range(partitions)
                if consumer.get_watermark_offsets(TopicPartition(DEPOSIT_TOPIC, p), timeout=TIMEOUT)[0] > 0]
    finally:
        consumer.close()


def topic_layout(admin: AdminClient, topic: str) -> NewTopic:
    """What recreates ``topic`` as it is: partitions, replication, and its own (non-default) settings."""
    metadata = admin.list_topics(topic=topic, timeout=TIMEOUT).topics[topic]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result()
    own = {name: entry.value for name, entry in config.items()
           if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and entry.value is not None}
    replication = min(len(p.replicas) for p in metadata.partitions.values())
    return NewTopic(topic, len(metadata.partitions), replication, config=own)


def recreate(admin: AdminClient, layout: NewTopic) -> None:
    """Create ``layout`` (retried while the deleted topic is still being removed)."""
    deadline = time.monotonic() + 4 * TIMEOUT
    while True:
        try:
            admin.create_topics([layout], request_timeout=TIMEOUT)[layout.topic].result()
            return
        except KafkaException as exc:
            if time.monotonic() > deadline or exc.args[0].code() not in (
                    KafkaError.TOPIC_ALREADY_EXISTS, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.REQUEST_TIMED_OUT):
                raise Refused(f"cannot recreate {layout.topic!r}: {_describe(exc)}") from exc
            time.sleep(0.5)


def _describe(exc: KafkaException) -> str:
    err: Any = exc.args[0] if exc.args else exc
    return err.str() if isinstance(err, KafkaError) else str(err)


if __name__ == "__main__":  # pragma: no cover
    main()

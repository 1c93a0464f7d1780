"""walletctl: look at and repair a running wallet deployment from its Kafka cluster.

    walletctl lag                      how far each processor group is behind the deposits
    walletctl get balance <wallet>     one table value, decoded, with the offsets it reflects
    walletctl topics check             the topics exist, agree and are configured as the services need
    walletctl reset <group> --dry-run  what a reset would delete; without --dry-run, do it
    walletctl rebuild <group>          a new version of the table from the deposits, beside the
                                       live one; readers switch to it once it caught up, then the
                                       old one is retired (--dry-run: the plan only)

Connects like the services do: ``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_CONFIG`` and the TLS/SASL
variables (see docs/operations.md). Exit codes: 0 fine, 1 a problem was found or refused,
2 a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from importlib import metadata
from types import ModuleType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic
from google.protobuf.json_format import MessageToDict

from walletkit.service.settings import env_flag, kafka_settings
from walletkit.stream import KafkaSettings, TableVersion, TableVersions, TopicManager, partition_for, table_topic
from walletkit.wallet.topology import (
    DEPOSIT_TOPIC,
    TABLE_VERSIONS_TOPIC,
    TABLES,
    live_groups,
    table,
)

#: The tables walletctl reads, resets and rebuilds, by base group (the domain's registry).
GROUPS = {t.base: t.codec for t in TABLES}
TIMEOUT = 15.0


def processor_module(base: str) -> ModuleType:
    """The main module of ``base``'s processor (its console script's, from the registry): its
    ``add_flags(parser)`` adds the rules' settings, its ``spec_from(args)`` makes the group."""
    service = table(base).service
    found = metadata.entry_points(group="console_scripts", name=service)
    if not found:
        raise Refused(f"the processor {service!r} of table {base!r} is not installed here")
    return importlib.import_module(next(iter(found)).module)


def live_tables(settings: KafkaSettings) -> dict[str, str]:
    """The table topic serving each group now (a rebuild may have switched it)."""
    versions = TableVersions(settings, TABLE_VERSIONS_TOPIC).read(TIMEOUT)
    return {base: table_topic(group) for base, group in live_groups(versions).items()}


class Refused(Exception):
    """Something walletctl will not do, or found wrong; the message says what to do."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="walletctl",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    from walletkit.service.build import add_version_flag

    add_version_flag(parser)
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
    # conflict_handler: the processors share some settings (the idempotency horizon): one flag each.
    rebuild = sub.add_parser(
        "rebuild",
        help="build the next version of a table from the deposits, switch readers "
        "to it once it caught up, retire the old one",
        conflict_handler="resolve",
    )
    rebuild.add_argument("group", choices=sorted(GROUPS))
    rebuild.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    rebuild.add_argument(
        "--no-switch",
        action="store_true",
        help="build and compare only: the live version stays, the new one is kept beside it",
    )
    rebuild.add_argument(
        "--expect-identical",
        action="store_true",
        help="refuse to switch if any wallet differs (a pure rebuild: same rules and code)",
    )
    rebuild.add_argument(
        "--keep-old", action="store_true", help="after the switch, keep the old table topic and the old group's offsets"
    )
    rebuild.add_argument("--state-dir", default="./walletctl-state", help="where the new version's RocksDB is built")
    rebuild.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds the build may take to catch up with the live group"
    )
    env_flag(
        rebuild,
        "--processing-guarantee",
        "WALLET_PROCESSING_GUARANTEE",
        "the processors' guarantee (exactly_once on Apache Kafka)",
        default="exactly_once",
        choices=["exactly_once", "applied_offsets"],
    )
    for base in GROUPS:  # the rules' settings, from the same variables the processors read
        processor_module(base).add_flags(rebuild)
    args = parser.parse_args(argv)
    args.session_timeout_ms, args.instance_id = 10_000, None
    settings = kafka_settings(args, client_id="walletctl")
    commands = {"lag": cmd_lag, "get": cmd_get, "topics": cmd_topics_check, "reset": cmd_reset, "rebuild": cmd_rebuild}
    try:
        sys.exit(commands[args.command](settings, args))
    except Refused as exc:
        print(f"walletctl {args.command}: {exc}", file=sys.stderr)
        sys.exit(1)
    except KafkaException as exc:
        print(
            f"walletctl {args.command}: Kafka: {_describe(exc)}; check KAFKA_BOOTSTRAP_SERVERS and that the "
            "cluster is up",
            file=sys.stderr,
        )
        sys.exit(1)


# -- lag -------------------------------------------------------------------------


def cmd_lag(settings: KafkaSettings, args: argparse.Namespace) -> int:
    from wallet_operator.errors import OperatorError
    from wallet_operator.kafka_lag import LagReader

    live = live_groups(TableVersions(settings, TABLE_VERSIONS_TOPIC).read(TIMEOUT))
    reader = LagReader(settings.admin(), timeout=TIMEOUT, client_id="walletctl")
    try:
        snapshots = [
            reader.read(live[group], DEPOSIT_TOPIC) for group in ([args.group] if args.group else sorted(GROUPS))
        ]
    except OperatorError as exc:
        raise Refused(str(exc)) from exc
    finally:
        reader.close()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "group": s.group,
                        "topic": s.topic,
                        "total_lag": s.total_lag,
                        "partitions": [
                            {"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag}
                            for p in s.partitions
                        ],
                    }
                    for s in snapshots
                ],
                indent=2,
            )
        )
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
    topic, codec = live_tables(settings)[args.table], GROUPS[args.table]
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
    print(
        json.dumps(
            {
                "table": topic,
                "wallet": args.wallet,
                "partition": partition,
                "changelog_offset": offset,
                "applied_offset": codec.applied_offset(value),
                "value": MessageToDict(value, preserving_proto_field_name=True),
            },
            indent=2,
        )
    )
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
STREAM_CONFIG = {
    "cleanup.policy": {"delete"},
    "message.timestamp.type": {"LogAppendTime"},
    "unclean.leader.election.enable": {"false"},
}
TABLE_CONFIG = {"cleanup.policy": {"compact"}, "unclean.leader.election.enable": {"false"}}


def cmd_topics_check(settings: KafkaSettings, _args: argparse.Namespace) -> int:
    topics = [DEPOSIT_TOPIC, *live_tables(settings).values()]
    problems = check_topics(settings, topics)
    for line in problems:
        print(f"PROBLEM {line}")
    if not problems:
        print(f"OK {', '.join(topics)}: present, co-partitioned and configured as the services need")
    return 1 if problems else 0


def check_topics(settings: KafkaSettings, topics: list[str]) -> list[str]:
    admin = AdminClient(settings.admin())
    metadata = admin.list_topics(timeout=TIMEOUT)
    problems: list[str] = []
    counts: dict[str, int] = {}
    replicas: dict[str, int] = {}
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            problems.append(
                f"{topic}: missing (the services create it unless WALLET_CREATE_TOPICS=false; "
                "with Strimzi, check the KafkaTopic resources)"
            )
            continue
        counts[topic] = len(found.partitions)
        replicas[topic] = min(len(p.replicas) for p in found.partitions.values())
        print(f"   {topic}: {counts[topic]} partitions, replication {replicas[topic]}")
    if len(set(counts.values())) > 1:
        problems.append(
            "partition counts differ ("
            + ", ".join(f"{t}={n}" for t, n in counts.items())
            + "): a wallet's deposits and table values would land on different members"
        )
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in counts]
    for resource, future in admin.describe_configs(resources, request_timeout=TIMEOUT).items():
        config = future.result()
        topic = resource.name
        for name, accepted in (STREAM_CONFIG if topic == DEPOSIT_TOPIC else TABLE_CONFIG).items():
            value = config[name].value if name in config else None
            if value not in accepted:
                problems.append(f"{topic}: {name}={value}, needs {' or '.join(sorted(accepted))}")
        min_isr = int(config["min.insync.replicas"].value) if "min.insync.replicas" in config else 1
        if replicas.get(topic, 1) > 1 and min_isr < 2:
            problems.append(
                f"{topic}: min.insync.replicas={min_isr} with replication {replicas[topic]}: one "
                "broker alone may acknowledge a write (set 2)"
            )
    return problems


# -- reset -----------------------------------------------------------------------


def cmd_reset(settings: KafkaSettings, args: argparse.Namespace) -> int:
    live = live_groups(TableVersions(settings, TABLE_VERSIONS_TOPIC).read(TIMEOUT))
    group = live[args.group]
    topic = table_topic(group)
    admin = AdminClient(settings.admin())
    description = admin.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result()
    members = list(description.members)
    if members:
        raise Refused(
            f"group {group!r} has {len(members)} running member(s) "
            f"({', '.join(m.group_instance_id or m.member_id for m in members)}): scale the {group} "
            "StatefulSet to 0 first, so nothing writes the table while it is reset"
        )
    counts = TopicManager(settings, timeout=TIMEOUT).partitions([topic, DEPOSIT_TOPIC])
    if DEPOSIT_TOPIC not in counts:
        raise Refused(f"topic {DEPOSIT_TOPIC!r} does not exist: there is nothing to rebuild {topic!r} from")
    trimmed = deposits_trimmed(settings, counts[DEPOSIT_TOPIC])
    if trimmed:
        raise Refused(
            f"{DEPOSIT_TOPIC!r} no longer holds its first records (partitions {trimmed} start after "
            f"offset 0): a rebuild would miss those deposits. Restore {topic!r} from a backup instead"
        )
    layout = topic_layout(admin, topic) if topic in counts else None
    plan = [
        f"delete the committed offsets of group {group!r} on {DEPOSIT_TOPIC!r}",
        f"delete and recreate topic {topic!r} ({counts.get(topic, counts.get(DEPOSIT_TOPIC, 0))} partitions, "
        "compacted): its values are rebuilt from every deposit",
    ]
    for step in plan:
        print(("would " if args.dry_run else "") + step)
    print(
        "then: the processors wipe their local state of the old topic when they start (its topic id "
        "changed), and the API's views rebuild their replicas the same way"
    )
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
    recreate(
        admin,
        layout
        or NewTopic(
            topic,
            counts[DEPOSIT_TOPIC],
            config={"cleanup.policy": "compact", "unclean.leader.election.enable": "false"},
        ),
    )
    print(f"reset {group}: done; start the {group} processors to rebuild {topic}")
    return 0


def deposits_trimmed(settings: KafkaSettings, partitions: int) -> list[int]:
    """Partitions of the deposit topic whose log no longer starts at offset 0."""
    consumer = Consumer(settings.reader())
    try:
        return [
            p
            for p in range(partitions)
            if consumer.get_watermark_offsets(TopicPartition(DEPOSIT_TOPIC, p), timeout=TIMEOUT)[0] > 0
        ]
    finally:
        consumer.close()


def topic_layout(admin: AdminClient, topic: str) -> NewTopic:
    """What recreates ``topic`` as it is: partitions, replication, and its own (non-default) settings."""
    metadata = admin.list_topics(topic=topic, timeout=TIMEOUT).topics[topic]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result()
    own = {
        name: entry.value
        for name, entry in config.items()
        if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and entry.value is not None
    }
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
                KafkaError.TOPIC_ALREADY_EXISTS,
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                KafkaError.REQUEST_TIMED_OUT,
            ):
                raise Refused(f"cannot recreate {layout.topic!r}: {_describe(exc)}") from exc
            time.sleep(0.5)


# -- rebuild ---------------------------------------------------------------------


def cmd_rebuild(settings: KafkaSettings, args: argparse.Namespace) -> int:
    """Build the next version of a table from every deposit, beside the live one; compare;
    switch (processors and views follow the versions topic); retire the old one."""
    base = args.group
    versions = TableVersions(settings, TABLE_VERSIONS_TOPIC)
    live = versions.current(base, TIMEOUT)
    new = live.next()
    old_table, new_table = table_topic(live.group), table_topic(new.group)
    admin = AdminClient(settings.admin())
    counts = TopicManager(settings, timeout=TIMEOUT).partitions([DEPOSIT_TOPIC, old_table, new_table])
    if DEPOSIT_TOPIC not in counts:
        raise Refused(f"topic {DEPOSIT_TOPIC!r} does not exist: there is nothing to rebuild {old_table!r} from")
    if old_table not in counts:
        raise Refused(f"the live table {old_table!r} does not exist: is the {base} processor deployed?")
    trimmed = deposits_trimmed(settings, counts[DEPOSIT_TOPIC])
    if trimmed:
        raise Refused(
            f"{DEPOSIT_TOPIC!r} no longer holds its first records (partitions {trimmed} start after "
            "offset 0): a rebuild would miss those deposits"
        )
    members = group_members(admin, new.group)
    if members:
        raise Refused(
            f"group {new.group!r} already has running members ({', '.join(members)}): another rebuild is running"
        )
    resuming = new_table in counts
    plan = [
        f"{'go on building' if resuming else 'create'} {new_table!r} (version {new.version}, group "
        f"{new.group!r}) from every deposit, beside the live {old_table!r} (version {live.version})",
        f"compare it with {old_table!r}, wallet by wallet, where both reflect the same deposits",
    ]
    if not args.no_switch:
        plan.append(
            f"switch: record {new.group!r} as {base}'s live version in {TABLE_VERSIONS_TOPIC!r}; the "
            f"{base} processors drain and go on as group {new.group!r}, the API's views move to "
            f"{new_table!r} once it holds what {old_table!r} held"
        )
        if not args.keep_old:
            plan.append(f"retire {old_table!r} and the offsets of group {live.group!r}, once no processor of it runs")
    for step in plan:
        print(("would " if args.dry_run else "") + step)
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    if not resuming:
        layout = topic_layout(admin, old_table)
        recreate(admin, NewTopic(new_table, layout.num_partitions, layout.replication_factor, config=layout.config))
        print(f"created {new_table!r} ({layout.num_partitions} partitions)")
    build(settings, args, base, live, new)
    same, differ, moved, examples = compare_tables(settings, live, new, GROUPS[base])
    print(
        f"compared: {same:,} values identical, {differ:,} different, {moved:,} changed by newer deposits "
        "since (not comparable)"
    )
    for line in examples:
        print(f"   {line}")
    if differ and args.expect_identical:
        raise Refused(
            f"{differ} values differ and --expect-identical was given: not switching; {new_table!r} "
            "stays beside the live table (run again to go on, or delete it)"
        )
    if args.no_switch:
        print(f"not switched (--no-switch): {old_table!r} stays live, {new_table!r} is kept beside it")
        return 0
    versions.publish(new)
    print(f"switched: {base} is now version {new.version} ({new.group!r}, table {new_table!r})")
    wait_for_switch(settings, admin, live.group, new.group, args.timeout)
    if args.keep_old:
        print(f"kept {old_table!r} and the offsets of group {live.group!r} (--keep-old)")
        return 0
    try:
        admin.delete_consumer_groups([live.group], request_timeout=TIMEOUT)[live.group].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            raise
    admin.delete_topics([old_table], operation_timeout=TIMEOUT)[old_table].result()
    print(f"retired {old_table!r} and group {live.group!r}")
    return 0


def group_members(admin: AdminClient, group: str) -> list[str]:
    description = admin.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result()
    return [m.group_instance_id or m.member_id for m in description.members]


def build(settings: KafkaSettings, args: argparse.Namespace, base: str, live: TableVersion, new: TableVersion) -> None:
    """Run the new version's processor here until it has consumed as far as the live group."""
    import dataclasses
    import threading
    from pathlib import Path

    from walletkit.stream import Guarantee, Processor, committed_offsets

    spec = dataclasses.replace(processor_module(base).spec_from(args), group=new.group)
    processor = Processor.create(spec, settings, Path(args.state_dir), guarantee=Guarantee(args.processing_guarantee))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            processor.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failure.append(exc)

    admin = AdminClient(settings.admin())  # one client for the progress polls
    thread = threading.Thread(target=run, name=f"rebuild-{new.group}", daemon=True)
    thread.start()
    started = last_print = time.monotonic()
    try:
        while True:
            if failure or not thread.is_alive():
                raise Refused(f"the rebuild's processor stopped: {failure[0] if failure else 'no reason given'}")
            target = committed_offsets(settings, live.group, DEPOSIT_TOPIC, admin=admin)
            done = committed_offsets(settings, new.group, DEPOSIT_TOPIC, admin=admin)
            total, reached = sum(target.values()), sum(min(done.get(p, 0), off) for p, off in target.items())
            if processor.ready and all(done.get(p, -1) >= off for p, off in target.items()):
                print(
                    f"built: {new.group!r} has consumed as far as {live.group!r} ({total:,} deposits) in "
                    f"{time.monotonic() - started:.1f}s"
                )
                return
            now = time.monotonic()
            if now - last_print >= 2.0:
                last_print = now
                rate = reached / max(now - started, 1e-3)
                share = 100 * reached / total if total else 100.0
                eta = f"{(total - reached) / rate:.0f}s" if rate > 0 else "unknown"
                print(
                    f"building {new.group}: {reached:,} of {total:,} deposits ({share:.0f}%), {rate:,.0f}/s, ETA {eta}",
                    flush=True,
                )
            if now - started > args.timeout:
                raise Refused(
                    f"the rebuild did not catch up with {live.group!r} within {args.timeout:.0f}s; run "
                    "again to go on from where it stopped"
                )
            time.sleep(0.5)
    finally:
        processor.stop()
        thread.join(60)


def read_table(settings: KafkaSettings, topic: str) -> dict[bytes, tuple[int, bytes]]:
    """Every key's (partition, latest value) in ``topic`` (read_committed, to every partition's end)."""
    partitions = TopicManager(settings, timeout=TIMEOUT).partitions([topic])[topic]
    consumer = Consumer(settings.reader())
    values: dict[bytes, tuple[int, bytes]] = {}
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        pending = set(range(partitions))
        deadline = time.monotonic() + 600
        while pending:
            if time.monotonic() > deadline:
                raise Refused(f"reading {topic} took longer than 600 s")
            for m in consumer.consume(10_000, 0.5):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise Refused(f"reading {topic}[{m.partition()}]: {m.error().str()}")
                if m.value() is None:
                    values.pop(m.key(), None)
                else:
                    values[m.key()] = (m.partition(), m.value())
    finally:
        consumer.close()
    return values


def compare_tables(
    settings: KafkaSettings, old: TableVersion, new: TableVersion, codec: Any
) -> tuple[int, int, int, list[str]]:
    """(identical, different, not comparable, examples) over the keys of both tables.

    Values carry the input offset they reflect. Per partition both tables reflect every
    deposit below ``bound``, the lesser of the two groups' committed offsets (the live group
    goes on meanwhile): a key whose value in either table reflects a deposit from there on
    is not comparable; any other key must be identical, present in both or in neither.
    """
    from walletkit.stream import committed_offsets

    bound = {
        p: min(off, committed_offsets(settings, new.group, DEPOSIT_TOPIC).get(p, -1))
        for p, off in committed_offsets(settings, old.group, DEPOSIT_TOPIC).items()
    }
    left, right = read_table(settings, table_topic(old.group)), read_table(settings, table_topic(new.group))

    def applied(raw: bytes | None) -> int:
        if raw is None:
            return -1
        try:
            return codec.applied_offset(codec.decode(raw))
        except Exception:  # noqa: BLE001 - a value this codec cannot read compares by its bytes
            return -1

    same = differ = moved = 0
    examples: list[str] = []
    for key in sorted(set(left) | set(right)):
        partition, a = left.get(key, (None, None))
        partition_b, b = right.get(key, (None, None))
        p = partition if partition is not None else partition_b
        if max(applied(a), applied(b)) >= bound.get(p, -1):
            moved += 1
        elif a == b:
            same += 1
        else:
            differ += 1
            if len(examples) < 5:
                name = key.decode(errors="replace").replace("\0", " ")
                examples.append(
                    f"{name}: "
                    + (
                        f"only in {table_topic(old.group if b is None else new.group)}"
                        if a is None or b is None
                        else f"{_brief(codec, a)} -> {_brief(codec, b)}"
                    )
                )
    return same, differ, moved, examples


def _brief(codec: Any, raw: bytes) -> str:
    return json.dumps(MessageToDict(codec.decode(raw), preserving_proto_field_name=True), sort_keys=True)[:200]


def wait_for_switch(settings: KafkaSettings, admin: AdminClient, old: str, new: str, timeout: float) -> None:
    """Until no member of the old group runs and the new group consumed as far as the old one had."""
    from walletkit.stream import group_has_passed

    deadline = time.monotonic() + timeout
    last_print = 0.0
    while True:
        left = group_members(admin, old)
        if not left and group_has_passed(settings, new, old, DEPOSIT_TOPIC, admin):
            print(f"the processors moved: no member of {old!r} runs; {new!r} has consumed as far as it had")
            return
        if time.monotonic() > deadline:
            raise Refused(
                f"members of {old!r} still run after {timeout:.0f}s ({', '.join(left)}); the old version "
                "was not retired: check that the processors run this release, then run rebuild again "
                "or delete the old table yourself"
            )
        if time.monotonic() - last_print >= 5.0:
            last_print = time.monotonic()
            print(f"waiting for the processors to move: {len(left)} member(s) of {old!r} still run", flush=True)
        time.sleep(0.5)


def _describe(exc: KafkaException) -> str:
    err: Any = exc.args[0] if exc.args else exc
    return err.str() if isinstance(err, KafkaError) else str(err)


if __name__ == "__main__":  # pragma: no cover
    main()

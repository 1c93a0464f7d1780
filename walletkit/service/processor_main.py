"""Running a processor service: flags, topics, operations endpoints, signals."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from confluent_kafka import KafkaException

from walletkit.service.logs import setup_logging
from walletkit.service.ops import OpsServer
from walletkit.service.runtime import prepare_process
from walletkit.service.settings import kafka_settings
from walletkit.stream import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CACHE_ENTRIES,
    DEFAULT_MAX_VALUE_BYTES,
    CrashInjector,
    ForeignTable,
    GroupSpec,
    Guarantee,
    Processor,
    StreamError,
    TableVersion,
    TableVersions,
    TopicManager,
)

log = logging.getLogger(__name__)


#: ``wait_for_topics(topics, partitions, *, create, stop, service, log, on_wait)``: the application's
#: topics checked (and created if asked), waiting while they are missing; the partition count, or
#: None if ``stop`` was set meanwhile (the wallet's is walletkit.wallet.topology.wait_for_topics).
WaitForTopics = Callable[..., "int | None"]


def run_processor(
    service: str,
    args: argparse.Namespace,
    make_spec: Callable[[argparse.Namespace], GroupSpec],
    *,
    versions_topic: str,
    wait_for_topics: WaitForTopics,
) -> int:
    """Run one processor until SIGTERM/SIGINT; return the process exit code.

    ``versions_topic`` holds the tables' versions; ``wait_for_topics`` is the application's
    topic check (see WaitForTopics): the runtime knows no application's topics.

    On a signal the processor finishes its batch, makes it durable, commits and
    leaves the group, then the process exits 0. The group run is the table's live
    version (walletkit.stream.versions): when ``walletctl rebuild`` switches it, the
    processor drains and commits the same way and the process goes on as a member of
    the new version's group.
    """
    setup_logging(service, args.log_level, args.log_format)
    settings = kafka_settings(args, client_id=service)
    base_spec = make_spec(args)
    faults = os.environ.get("WALLET_FAULT_INJECTION")  # testing only, see walletkit.stream.faults
    prepare_process(service)
    stopping = threading.Event()
    current: dict[str, Processor] = {}
    waiting: dict[str, list[str] | None] = {"topics": None}  # what the start waits for

    def new_processor(group: str) -> Processor:
        spec = dataclasses.replace(base_spec, group=group)
        return Processor.create(
            spec,
            settings,
            args.state_dir,
            guarantee=Guarantee(args.processing_guarantee),
            batch_size=args.batch_size,
            cache_entries=args.cache_entries,
            max_value_bytes=args.max_value_bytes,
            standby_replicas=args.standby_replicas,
            faults=CrashInjector(faults, trigger=os.environ.get("WALLET_FAULT_TRIGGER")) if faults else None,
        )

    def status() -> dict:
        p = current.get("p")
        if p is None:  # still waiting for its topics (or for Kafka)
            return {
                "state": "waiting_for_topics",
                "group": base_spec.group,
                "missing_topics": waiting["topics"],
                "guarantee": args.processing_guarantee,
            }
        return {
            "state": p.state.value,
            "group": p.spec.group,
            "partitions": p.partitions,
            "restoring": p.restoring,
            "waiting": p.waiting,
            "standby": p.standby,
            "guarantee": p.guarantee.value,
        }

    # Up before the topics are checked: unready (not dead) while they are missing.
    ops = OpsServer(
        args.http_host,
        args.http_port,
        alive=lambda: "p" not in current or current["p"].alive(),
        ready=lambda: "p" in current and current["p"].ready,
        status=status,
    )
    ops.start()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: draining", signal.Signals(signum).name)
        stopping.set()
        if "p" in current:
            current["p"].stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        found = wait_for_topics(
            TopicManager(
                settings, replication_factor=args.replication_factor, min_insync_replicas=args.min_insync_replicas
            ),
            args.partitions,
            create=args.create_topics,
            stop=stopping,
            service=service,
            log=log,
            on_wait=lambda missing: waiting.__setitem__("topics", missing),
        )
        if found is None:
            ops.stop()
            log.info("%s stopped before its topics appeared", service)
            return 0
        versions = TableVersions(settings, versions_topic)
        version = versions.current(base_spec.group, timeout=30)
    except (StreamError, KafkaException) as exc:
        log.error("%s", exc)
        ops.stop()
        return 1
    processor = current["p"] = new_processor(version.group)

    def on_versions(live: dict[str, TableVersion]) -> None:
        wanted = live.get(base_spec.group, TableVersion.first(base_spec.group))
        if wanted.group != current["p"].spec.group:
            log.info(
                "table %s switched to version %d (group %s): draining group %s",
                base_spec.group,
                wanted.version,
                wanted.group,
                current["p"].spec.group,
            )
            current["p"].stop()

    if stopping.is_set():  # a signal while the processor was being made
        processor.stop()
    watch = versions.watch(on_versions)
    try:
        while True:
            spec = processor.spec
            log.info(
                "%s starting: group %s (table version %d), input %s, table %s, state in %s",
                service,
                spec.group,
                version.version,
                spec.input_topic,
                spec.table_topic,
                args.state_dir,
            )
            try:
                processor.run()
            except ForeignTable as exc:
                log.error(
                    "%s refused to start: %s. To take this table over exactly, stop every other program of "
                    "group %s, then run `walletctl reset %s`: it rebuilds %s from every deposit in the ledger "
                    '(see docs/migrating-from-goka.md, "Taking over")',
                    service,
                    exc,
                    exc.group,
                    base_spec.group,
                    exc.table,
                )
                return 1
            except StreamError as exc:
                log.error("%s stopped: %s", service, exc)
                return 1
            if stopping.is_set():
                break
            try:
                version = versions.current(base_spec.group, timeout=30)
            except KafkaException as exc:
                log.error("%s stopped: cannot read the table versions: %s", service, exc)
                return 1
            if version.group == spec.group:
                break  # stopped for another reason than a switch
            processor = current["p"] = new_processor(version.group)
    finally:
        watch.stop()
        ops.stop()
    log.info("%s stopped cleanly", service)
    return 0


def main_for(
    service: str,
    parser: argparse.ArgumentParser,
    make_spec: Callable[[argparse.Namespace], GroupSpec],
    argv: list[str] | None = None,
    *,
    versions_topic: str,
    wait_for_topics: WaitForTopics,
) -> None:
    from walletkit.service.settings import env_flag, parse

    env_flag(
        parser,
        "--cache-entries",
        "WALLET_CACHE_ENTRIES",
        "table values kept decoded in memory across batches (hot wallets skip RocksDB and decoding)",
        default=DEFAULT_CACHE_ENTRIES,
        type=int,
    )
    env_flag(
        parser,
        "--batch-size",
        "WALLET_BATCH_SIZE",
        "records processed and made durable together at most (repeated keys in a batch cost one write)",
        default=DEFAULT_BATCH_SIZE,
        type=int,
    )
    env_flag(
        parser,
        "--max-value-bytes",
        "WALLET_MAX_VALUE_BYTES",
        "largest table value a deposit may leave; a deposit that would exceed it is quarantined "
        "(keep it below the table topics' max.message.bytes)",
        default=DEFAULT_MAX_VALUE_BYTES,
        type=int,
    )
    env_flag(
        parser,
        "--standby-replicas",
        "WALLET_STANDBY_REPLICAS",
        "member failures at once after which every moved partition still lands on a warm copy: each "
        "instance keeps the partitions it would take over warm, so a takeover restores only the tail "
        "(0: none; at least the other members' count: every partition everywhere)",
        default=0,
        type=int,
    )
    args = parse(parser, argv)
    if args.standby_replicas < 0:
        parser.error("--standby-replicas must be 0 or more")
    if args.max_value_bytes < 1024:
        parser.error("--max-value-bytes must be at least 1024")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.cache_entries < 0:
        parser.error("--cache-entries must be 0 (no cache across batches) or more")
    sys.exit(run_processor(service, args, make_spec, versions_topic=versions_topic, wait_for_topics=wait_for_topics))

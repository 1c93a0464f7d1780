"""Contenders and helpers run as their own processes (so each is timed, measured
and profiled alone): ``python -m wallet_bench.workers KIND ...`` in the project venv.

- ``processor``: the library ``walletkit.stream.Processor`` with the service's
  GroupSpec (what ``wallet-balance`` / ``wallet-above-threshold`` run, minus their
  operations HTTP server and JSON logging);
- ``raw``: the floor for the processor's I/O pattern: consume a batch, decode each
  DepositRequest, produce one record per input, flush, commit; no state;
- ``restore``: ``walletkit.stream.recovery.Restorer`` rebuilding a table into fresh RocksDB;
- ``bare-http``: an aiohttp app (uvloop, like wallet-api) doing only the JSON parse/reply.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
from pathlib import Path


def _settings(args):
    from walletkit.stream import KafkaSettings, parse_kafka_config

    return KafkaSettings(
        args.bootstrap,
        client_id=f"bench-{args.cmd}",
        session_timeout_ms=args.session_timeout_ms,
        extra=parse_kafka_config(args.kafka_config),
    )


def run_processor(args) -> None:
    from walletkit.service.runtime import tune_gc
    from walletkit.stream import Guarantee, Processor, TopicManager
    from walletkit.wallet.topology import DEPOSIT_TOPIC

    if args.kind == "balance":
        from wallet_balance.processor import balance_group

        spec = balance_group()
    else:
        from wallet_above_threshold.processor import above_threshold_group
        from wallet_above_threshold.threshold import Rule

        spec = above_threshold_group(Rule())
    if args.group:
        spec = dataclasses.replace(spec, group=args.group)
    settings = _settings(args)
    topics = TopicManager(settings)
    partitions = topics.partitions([DEPOSIT_TOPIC])[DEPOSIT_TOPIC]
    topics.ensure_table(spec.table_topic, partitions)
    tune_gc()  # as the console scripts do
    proc = Processor.create(
        spec, settings, args.state_dir, batch_size=args.batch_size, guarantee=Guarantee(args.guarantee)
    )
    signal.signal(signal.SIGTERM, lambda *_: proc.stop())
    signal.signal(signal.SIGINT, lambda *_: proc.stop())
    proc.run()


def run_raw(args) -> None:
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    from walletkit.stream import TopicManager
    from walletkit.wallet.codecs import DEPOSIT, Wallet

    settings = _settings(args)
    topics = TopicManager(settings)
    partitions = topics.partitions([args.topic])[args.topic]
    topics.ensure_table(args.out_topic, partitions)
    consumer = Consumer(settings.group_consumer(args.group))
    # The processor's changelog producer settings (acks=all, idempotent, linger 1 ms).
    producer = Producer(settings.producer(**{"linger.ms": 1}))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    consumer.subscribe([args.topic])
    decode = DEPOSIT.decode
    produce = producer.produce
    out = args.out_topic
    while not stop:
        msgs = consumer.consume(args.batch_size, 0.05)
        if not msgs:
            continue
        last: dict[int, int] = {}
        for m in msgs:
            if m.error() is not None:
                if m.error().code() != KafkaError._PARTITION_EOF:
                    logging.warning("consumer: %s", m.error().str())
                continue
            dep = decode(m.value())
            p = m.partition()
            value = Wallet(WalletID=dep.WalletID, BalanceMicros=dep.AmountMicros, AppliedOffset=m.offset())
            while True:
                try:
                    produce(out, value.SerializeToString(), m.key(), partition=p)
                    break
                except BufferError:
                    producer.poll(0.05)
            last[p] = m.offset()
        if last:
            if producer.flush(30):
                raise SystemExit("raw loop: records unacknowledged")
            # Asynchronous, like the processor's commits: the loop never waits for the coordinator.
            consumer.commit(offsets=[TopicPartition(args.topic, p, o + 1) for p, o in last.items()], asynchronous=True)
    consumer.close()
    producer.flush(5)


def run_restore(args) -> None:
    from confluent_kafka import Consumer

    from walletkit.stream import TopicManager
    from walletkit.stream.recovery import Restorer
    from walletkit.stream.store import Store
    from walletkit.stream.table import TablePartition

    if args.kind == "balance":
        from walletkit.wallet.codecs import WALLET as codec
    else:
        from wallet_above_threshold.processor import WINDOW_STATE as codec
    settings = _settings(args)
    topics = TopicManager(settings)
    partitions = topics.partitions([args.topic])[args.topic]
    topic_id = topics.topic_ids([args.topic])[args.topic]
    root = Path(args.state_dir)
    parts = [TablePartition(Store(root / str(p)), codec, p) for p in range(partitions)]
    restorer = Restorer(Consumer(settings.reader()), args.topic, codec)
    started = time.perf_counter()
    records = restorer.restore(parts, topic_id)
    seconds = time.perf_counter() - started
    keys = sum(1 for part in parts for _ in part.store.items())
    for part in parts:
        part.close()
    print(json.dumps({"records": records, "seconds": seconds, "keys": keys}), flush=True)


def run_bare_http(args) -> None:
    from aiohttp import web

    async def deposit(request: web.Request) -> web.Response:
        doc = json.loads(await request.read())
        if not isinstance(doc, dict) or "WalletID" not in doc or "Amount" not in doc:
            return web.Response(status=400, text='{"error":"bad request"}', content_type="application/json")
        return web.Response(
            status=202,
            text=json.dumps({"WalletID": doc["WalletID"], "Amount": doc["Amount"]}, separators=(",", ":")),
            content_type="application/json",
        )

    async def details(request: web.Request) -> web.Response:
        wid = request.match_info["wallet_id"]
        return web.Response(
            text=f'{{"WalletID":{json.dumps(wid)},"Balance":8000,"AboveThreshold":false}}',
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_post("/deposit", deposit)
    app.router.add_get("/details/{wallet_id}", details)
    app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
    loop = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=args.port, loop=loop, print=None, access_log=None)


def main(argv: list[str] | None = None) -> None:
    from walletkit.stream import DEFAULT_BATCH_SIZE

    p = argparse.ArgumentParser(prog="wallet_bench.workers")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("processor", "raw", "restore"):
        s = sub.add_parser(name)
        s.add_argument("--bootstrap", required=True)
        s.add_argument("--session-timeout-ms", type=int, default=6000)
        s.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
        s.add_argument("--state-dir", default="")
        s.add_argument("--group", default="")
        s.add_argument("--kind", choices=("balance", "above_threshold"), default="balance")
        s.add_argument("--topic", default="deposit")
        s.add_argument("--out-topic", default="bench-raw-out")
        s.add_argument("--kafka-config", default="", help="extra librdkafka properties, key=value,...")
        s.add_argument("--guarantee", default="exactly_once", choices=("exactly_once", "applied_offsets"))
    s = sub.add_parser("bare-http")
    s.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    {"processor": run_processor, "raw": run_raw, "restore": run_restore, "bare-http": run_bare_http}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])

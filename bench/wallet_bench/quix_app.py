"""The Quix Streams baseline: the same per-wallet aggregations as the two processors.

Runs in its own venv (``.venv/bench``: quixstreams pins an older confluent-kafka
than the project's lock) as ``python -m wallet_bench.quix_app``. It imports only
the generated protobuf module and the pure threshold rule from this repository, so
the arithmetic is the processors' own; state and changelog are Quix's (RocksDB,
``changelog__<group>--deposit--default``), on the same broker and input.

    balance          state["b"] += deposit's exact micro-units
    above_threshold  state["w"] = [flagged, [[at, offset, amount, cumulative], ...]]
                     updated by wallet_above_threshold.threshold.WindowState.add
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="wallet_bench.quix_app")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--kind", choices=("balance", "above_threshold"), required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--topic", default="deposit")
    p.add_argument("--commit-interval", type=float, default=1.0)
    p.add_argument("--commit-every", type=int, default=0, help="also checkpoint every N messages (0: only by time)")
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument(
        "--consumer-config", type=json.loads, default={}, help="extra librdkafka consumer properties, a JSON object"
    )
    args = p.parse_args(argv)

    from quixstreams import Application, State

    from wallet_above_threshold.threshold import Entry, Rule, WindowState
    from walletkit.wallet.wallet_pb2 import DepositRequest

    consumer_conf = {
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": max(500, args.session_timeout_ms // 5),
        "partition.assignment.strategy": "range",
        # the bench passes walletkit's prefetch tuning: the ratios compare
        # frameworks, not librdkafka settings
        **args.consumer_config,
    }
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        commit_every=args.commit_every,
        state_dir=args.state_dir,
        use_changelog_topics=True,
        loglevel="WARNING",
        consumer_extra_config=consumer_conf,
        producer_extra_config={"linger.ms": 1},
    )
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer="bytes")
    sdf = app.dataframe(topic)
    parse = DepositRequest.FromString

    def micros(dep) -> int:
        return dep.AmountMicros if dep.HasField("AmountMicros") else round(dep.Amount * 1_000_000)

    if args.kind == "balance":

        def on_deposit(value: bytes, state: State) -> None:
            dep = parse(value)
            state.set("b", state.get("b", 0) + micros(dep))
    else:
        rule = Rule()

        def on_deposit(value: bytes, state: State) -> None:
            dep = parse(value)
            at = dep.CreatedAtMicros if dep.HasField("CreatedAtMicros") else dep.CreatedAt * 1_000_000
            raw = state.get("w")
            ws = (
                WindowState()
                if raw is None
                else WindowState(
                    entries=[Entry(at=e[0], offset=e[1], amount=e[2], cumulative=e[3]) for e in raw[1]], flagged=raw[0]
                )
            )
            ws.add(Entry(at=at, offset=-1, amount=micros(dep)), rule)
            state.set("w", [ws.flagged, [[e.at, e.offset, e.amount, e.cumulative] for e in ws.entries]])

    sdf.update(on_deposit, stateful=True)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    app.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])

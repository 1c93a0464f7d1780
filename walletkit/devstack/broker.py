"""Which broker a local deployment runs on: Apache Kafka (tests, bench) or Tansu (``make run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

#: ``--kafka`` choices of ``wallet-stack`` and the bench.
BROKER_KINDS = ("apache", "tansu")


class Broker(Protocol):
    """What the devstack needs of a broker process (or cluster)."""

    kind: str
    #: librdkafka properties the services need on this broker (KAFKA_CONFIG); empty on Apache Kafka.
    client_config: dict[str, str]
    #: Further environment of the services on this broker; empty on Apache Kafka.
    service_env: dict[str, str]

    @property
    def bootstrap(self) -> str: ...

    def start(self) -> Broker: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


def make_broker(
    kind: str = "apache",
    *,
    port: int | None = None,
    log_path: str | Path | None = None,
    nodes: int = 1,
    data_dir: str | Path | None = None,
) -> Broker:
    """A broker of ``kind`` (not started). ``data_dir`` keeps Apache Kafka's logs there (kept
    after stop); without it they live in a temporary directory removed at stop. Tansu keeps
    nothing on disk."""
    if kind == "apache":
        from walletkit.devstack.kafka import ApacheKafka

        return ApacheKafka(nodes, port=port, log_path=log_path, data_dir=data_dir)
    if kind == "tansu":
        if nodes != 1:
            raise ValueError("Tansu runs as a single node")
        from walletkit.devstack.tansu import TansuBroker

        return TansuBroker(port=port, log_path=log_path)
    raise ValueError(f"unknown broker kind {kind!r}; choose one of {', '.join(BROKER_KINDS)}")

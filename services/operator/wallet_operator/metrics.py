"""The operator's Prometheus metrics. Labels: namespace and scaler (the resource's name), plus
consumer group, topic and partition where they apply; never anything unbounded."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SCALER = ("namespace", "scaler")

CONSUMER_LAG = Gauge(
    "wallet_operator_consumer_lag",
    "Records the consumer group has yet to read, all partitions",
    _SCALER + ("group", "topic"),
)
PARTITION_LAG = Gauge(
    "wallet_operator_partition_lag",
    "Records the consumer group has yet to read, per partition",
    _SCALER + ("group", "topic", "partition"),
)
PARTITIONS = Gauge("wallet_operator_partitions", "Partitions of the input topic (the replica cap)", _SCALER)
REPLICAS = Gauge(
    "wallet_operator_replicas",
    "Replicas of the scaled StatefulSet: current (its spec), recommended (from lag), desired (after stabilization)",
    _SCALER + ("kind",),
)
DEGRADED = Gauge(
    "wallet_operator_degraded",
    "1 while the scaler is Degraded (Kafka or the StatefulSet unreachable, or the spec invalid)",
    _SCALER,
)
PAUSED = Gauge("wallet_operator_paused", "1 while the scaler is paused (spec.paused)", _SCALER)
LAST_SYNC = Gauge(
    "wallet_operator_last_sync_timestamp_seconds",
    "Unix time of the last sync that read Kafka and the StatefulSet",
    _SCALER,
)
SCALINGS = Counter("wallet_operator_scalings", "Scale changes made", _SCALER + ("direction",))
SYNCS = Counter("wallet_operator_syncs", "Syncs by outcome: ok, or the Degraded reason", _SCALER + ("outcome",))
SYNC_SECONDS = Histogram(
    "wallet_operator_sync_duration_seconds",
    "Duration of one sync (Kafka reads, scale read and write)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_PER_SCALER = (CONSUMER_LAG, PARTITION_LAG, PARTITIONS, REPLICAS, DEGRADED, PAUSED, LAST_SYNC, SCALINGS, SYNCS)


def forget(namespace: str, scaler: str) -> None:
    """Drop every series of a deleted scaler, so its last values do not linger."""
    for metric in _PER_SCALER:
        for labels in list(metric._metrics):  # noqa: SLF001 (prometheus_client has no public listing)
            if labels[:2] == (namespace, scaler):
                metric.remove(*labels)

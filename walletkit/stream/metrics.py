"""Prometheus metrics of the stream toolkit.

Naming follows Prometheus' conventions: a ``stream_<component>_`` prefix, base units
(seconds, bytes) as suffixes, ``_total`` on counters. Labels are bounded: ``group``,
``topic``, ``partition`` (a topic's partition count), ``outcome`` (three values); a
record's key (a wallet id, in this project) is never a label.

Per-partition lag is computed from the fetch responses' high watermark (librdkafka's
statistics for processors, the cached watermark of the last fetch for views and
restores), never from a ListOffsets query: that is what Kafka reports as the log end
on every broker, including the embedded one used in development.

docs/observability.md lists every metric; tests/observability checks that it stays so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No ``*_created`` series next to every counter and histogram: Prometheus ignores them (unless
# its created-timestamps feature is on) and they double the series each process exposes.
disable_created_metrics()

#: Latency buckets (seconds) shared by the per-batch durations: up to the 30 s a batch's
#: changelog write and commit may take before it fails (the processor's flush timeout).
_BATCH_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Batch sizes: up to 50,000 records, five times the default WALLET_BATCH_SIZE.
BATCH_RECORDS_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000)
#: Delay buckets (seconds): from milliseconds (healthy) to half an hour (catching up).
_DELAY_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

# -- processor ---------------------------------------------------------------

RECORDS = Counter(
    "stream_processor_records_total",
    "Input records consumed by a processor, by outcome: processed, duplicate (already applied, skipped), skipped (malformed), "
    "quarantined (its table value would exceed the value-size limit: not applied, noted for its key).",
    ["group", "outcome"],
)
BATCH_SIZE = Histogram(
    "stream_processor_batch_records",
    "Input records per processed batch.",
    ["group"],
    buckets=BATCH_RECORDS_BUCKETS,
)
CALLBACK_SECONDS = Histogram(
    "stream_processor_callback_seconds",
    "Time spent in callbacks per batch.",
    ["group"],
    buckets=_BATCH_SECONDS,
)
FLUSH_SECONDS = Histogram(
    "stream_processor_flush_seconds",
    "Time to make a batch durable: changelog acknowledged, local state written.",
    ["group"],
    buckets=_BATCH_SECONDS,
)
COMMIT_SECONDS = Histogram(
    "stream_processor_commit_seconds",
    "Time to commit a batch's input offsets: under exactly_once sending them to the transaction and "
    "committing it, under applied_offsets from the commit request to the coordinator's answer.",
    ["group"],
    buckets=_BATCH_SECONDS,
)
COMMIT_FAILURES = Counter(
    "stream_processor_commit_failures_total",
    "Offset commits the group coordinator refused (the state is durable; records replay as duplicates).",
    ["group"],
)
FLUSH_FAILURES = Counter(
    "stream_processor_flush_failures_total",
    "Batches whose changelog write failed and were rewound to be processed again.",
    ["group"],
)
CHANGELOG_RECORDS = Counter(
    "stream_processor_changelog_records_total",
    "Records written to the group table's changelog.",
    ["group"],
)
PARTITIONS = Gauge(
    "stream_processor_partitions",
    "Partitions currently assigned to this processor instance (and restored).",
    ["group"],
)
READY = Gauge(
    "stream_processor_ready",
    "1 when the processor joined its group and every assigned partition is restored (what /readyz reports), else 0.",
    ["group"],
)
CONSUMER_LAG = Gauge(
    "stream_processor_consumer_lag",
    "Input records not yet committed, per assigned partition: the fetch's last stable offset (high watermark) "
    "minus the committed offset. From librdkafka statistics, every statistics.interval.ms.",
    ["group", "partition"],
)
RECORD_DELAY = Histogram(
    "stream_processor_record_delay_seconds",
    "Per batch, time from the oldest input record's timestamp (when it was produced) to the batch being durable.",
    ["group"],
    buckets=_DELAY_SECONDS,
)
STATE_BYTES = Gauge(
    "stream_processor_state_bytes",
    "Approximate size of the processor's local RocksDB state (SST files plus memtables) of its assigned partitions.",
    ["group"],
)

# -- restore -----------------------------------------------------------------

RESTORED_RECORDS = Counter(
    "stream_restore_records_total",
    "Changelog records read while restoring tables.",
    ["topic"],
)
RESTORE_SECONDS = Histogram(
    "stream_restore_seconds",
    "Time to restore the partitions of one assignment from the changelog (one observation per assignment).",
    ["topic"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
)
RESTORE_WAITING = Gauge(
    "stream_restore_waiting_partitions",
    "Restored partitions waiting for a transaction an earlier owner left open on their changelog "
    "to end (the broker aborts it after transaction.timeout.ms, or a fencing ends it).",
    ["topic"],
)
RESTORE_REMAINING = Gauge(
    "stream_restore_remaining_partitions",
    "Partitions still to restore in the current assignment (0 when no restore runs).",
    ["topic"],
)
RESTORE_REMAINING_RECORDS = Gauge(
    "stream_restore_remaining_records",
    "Changelog records still to read in the current restore, from the fetches' high watermarks "
    "(0 when no restore runs; unknown partitions count 0 until their first fetch).",
    ["topic"],
)
RESTORE_PROGRESS = Gauge(
    "stream_restore_progress_ratio",
    "Share of the running restore already read, 0 to 1 (1 when no restore runs).",
    ["topic"],
)
RESTORE_ETA = Gauge(
    "stream_restore_eta_seconds",
    "Seconds the running restore still needs at its pace so far (0 when none runs, -1 before its pace is known).",
    ["topic"],
)

# -- standby -----------------------------------------------------------------

STANDBY_PARTITIONS = Gauge(
    "stream_standby_partitions",
    "Partitions this instance keeps as warm standby copies (owned by another member; see WALLET_STANDBY_REPLICAS).",
    ["topic"],
)
STANDBY_RECORDS = Counter(
    "stream_standby_records_total",
    "Changelog records applied to standby copies.",
    ["topic"],
)
STANDBY_LAG = Gauge(
    "stream_standby_lag_records",
    "Changelog records the standby copies are behind their partitions' ends, in total: what a takeover would restore.",
    ["topic"],
)

# -- view --------------------------------------------------------------------

VIEW_RECORDS = Counter(
    "stream_view_records_total",
    "Changelog records applied to a view's local replica.",
    ["topic"],
)
VIEW_CAUGHT_UP = Gauge(
    "stream_view_caught_up",
    "1 once the view reached the end of every partition since it started (0 again while it rebuilds, or after it failed).",
    ["topic"],
)
VIEW_LAG = Gauge(
    "stream_view_lag",
    "Records between the view's position and the partition's end (the last fetch's high watermark), per partition.",
    ["topic", "partition"],
)
VIEW_RECORD_DELAY = Histogram(
    "stream_view_record_delay_seconds",
    "Per applied batch once caught up, time from the oldest changelog record's timestamp (written by the "
    "processor) to the batch being readable in the view.",
    ["topic"],
    buckets=_DELAY_SECONDS,
)

# -- emitter -----------------------------------------------------------------

EMIT_SECONDS = Histogram(
    "stream_emitter_ack_seconds",
    "Time from emit to the broker's acknowledgement (acknowledged records only).",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
EMIT_FAILURES = Counter(
    "stream_emitter_failures_total",
    "Records not stored: the broker did not acknowledge them, the producer's queue was full, "
    "or Kafka was known to be unreachable.",
    ["topic"],
)
EMITTER_CONNECTED = Gauge(
    "stream_emitter_connected",
    "1 while the emitter's producer can reach Kafka, else 0.",
    ["topic"],
)
EMIT_TRANSACTIONS = Counter(
    "stream_emitter_transactions_total",
    "A transactional emitter's transactions (each carries every record waiting when it began) by outcome: "
    "committed (its records are acknowledged), aborted (its records are invisible to read_committed readers "
    "and are produced again, or fail once their deadline passed).",
    ["topic", "outcome"],
)


# -- helpers used by the instrumented components -------------------------------


GUARANTEE = Gauge(
    "stream_processor_guarantee",
    "1 for the processing guarantee in force: exactly_once (Kafka transactions fence zombies) or "
    "applied_offsets (idempotent writes, replays recognised by the offset each table value carries).",
    ["group", "guarantee"],
)
TRANSACTIONS = Counter(
    "stream_processor_transactions_total",
    "Batches' transactions (changelog records and input offsets together) by outcome: committed, aborted, or "
    "abandoned (a client call that overran its timeout: the producer was replaced, which aborts it unless it "
    "had committed, and the batch was redone from the stores, which gives the same values either way).",
    ["group", "outcome"],
)
FENCED = Counter(
    "stream_processor_fenced_total",
    "Batches the broker refused because this member was fenced: its partitions had moved to another "
    "member (a new group generation) or its transactional id was taken over. The batch is aborted: "
    "none of its writes become visible.",
    ["group"],
)


def init_processor(group: str, ready: Callable[[], bool], guarantee: str = "exactly_once") -> None:
    """Create a processor's series up front (0 rather than absent) and bind its readiness."""
    for outcome in ("processed", "duplicate", "skipped", "quarantined"):
        RECORDS.labels(group, outcome)
    for metric in (COMMIT_FAILURES, FLUSH_FAILURES, CHANGELOG_RECORDS, PARTITIONS, STATE_BYTES, FENCED):
        metric.labels(group)
    for outcome in ("committed", "aborted"):
        TRANSACTIONS.labels(group, outcome)
    for name in ("exactly_once", "applied_offsets"):
        GUARANTEE.labels(group, name).set(1 if name == guarantee else 0)
    READY.labels(group).set_function(lambda: 1.0 if ready() else 0.0)


def statistics_config(
    extra: Mapping[str, Any], on_stats: Callable[[str], None], default_interval_ms: int = 5000
) -> dict[str, Any]:
    """librdkafka properties that deliver statistics to ``on_stats`` (``statistics.interval.ms``
    from the client settings wins over the default)."""
    return {
        "statistics.interval.ms": int(extra.get("statistics.interval.ms", default_interval_ms)),
        "stats_cb": on_stats,
    }


def consumer_lag_from_statistics(stats: str | Mapping[str, Any], topic: str) -> dict[int, int]:
    """Per-partition lag of ``topic`` from a librdkafka statistics document.

    The end is the partition's last stable offset (what a ``read_committed`` consumer can
    read; equal to the high watermark without transactions), else the high watermark,
    both learnt from fetch responses. The position is the committed offset, else the
    offset of the next record handed to the application, else the log start: a
    partition nothing was committed for is behind by everything in it. Partitions the
    consumer is not fetching (not assigned) are left out.
    """
    doc = json.loads(stats) if isinstance(stats, (str, bytes)) else stats
    partitions = (doc.get("topics", {}).get(topic) or {}).get("partitions", {})
    lag: dict[int, int] = {}
    for key, p in partitions.items():
        partition = int(key)
        if partition < 0 or p.get("fetch_state") in (None, "none", "stopped", "stopping"):
            continue
        end = p.get("ls_offset", -1)
        if end is None or end < 0:
            end = p.get("hi_offset", -1)
        if end is None or end < 0:
            continue  # nothing fetched yet: unknown, not zero
        for name in ("committed_offset", "app_offset", "lo_offset"):
            position = p.get(name, -1)
            if position is not None and position >= 0:
                break
        else:
            position = 0
        lag[partition] = max(end - position, 0)
    return lag


def set_partition_gauges(gauge: Gauge, owner: str, values: Mapping[int, float], reported: set[int]) -> set[int]:
    """Set ``gauge{owner, partition}`` for ``values`` and remove the series of partitions in
    ``reported`` that are no longer there (moved to another instance); return the new set."""
    for partition, value in values.items():
        gauge.labels(owner, str(partition)).set(value)
    for partition in reported - values.keys():
        try:
            gauge.remove(owner, str(partition))
        except KeyError:
            pass
    return set(values)

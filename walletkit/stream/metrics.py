"""Prometheus metrics of the stream toolkit (labels are bounded: group, topic, partition)."""

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter(
    "stream_processor_records_total",
    "Input records consumed by a processor, by outcome: processed, duplicate (already applied, skipped), skipped (malformed).",
    ["group", "outcome"],
)
BATCH_SIZE = Histogram(
    "stream_processor_batch_records",
    "Input records per processed batch.",
    ["group"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
CALLBACK_SECONDS = Histogram(
    "stream_processor_callback_seconds",
    "Time spent in callbacks per batch.",
    ["group"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
FLUSH_SECONDS = Histogram(
    "stream_processor_flush_seconds",
    "Time to make a batch durable: changelog acknowledged, local state written.",
    ["group"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
COMMIT_SECONDS = Histogram(
    "stream_processor_commit_seconds",
    "Time to commit a batch's input offsets.",
    ["group"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
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
    "Partitions currently assigned to this processor instance.",
    ["group"],
)
CONSUMER_LAG = Gauge(
    "stream_processor_consumer_lag",
    "Records between the processor's position and the partition's end, per partition.",
    ["group", "partition"],
)
STATE_BYTES = Gauge(
    "stream_processor_state_bytes",
    "Approximate size of the processor's local RocksDB state.",
    ["group"],
)
RESTORED_RECORDS = Counter(
    "stream_restore_records_total",
    "Changelog records read while restoring tables.",
    ["topic"],
)
RESTORE_SECONDS = Histogram(
    "stream_restore_seconds",
    "Time to restore one partition of a table from its changelog.",
    ["topic"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
)
RESTORE_REMAINING = Gauge(
    "stream_restore_partitions_remaining",
    "Partitions still to restore in the current assignment.",
    ["topic"],
)
VIEW_RECORDS = Counter(
    "stream_view_records_total",
    "Changelog records applied to a view's local replica.",
    ["topic"],
)
VIEW_CAUGHT_UP = Gauge(
    "stream_view_caught_up",
    "1 once the view reached the end of every partition since it started.",
    ["topic"],
)
VIEW_LAG = Gauge(
    "stream_view_lag",
    "Records between the view's position and the partition's end, per partition.",
    ["topic", "partition"],
)
EMIT_SECONDS = Histogram(
    "stream_emitter_ack_seconds",
    "Time from emit to the broker's acknowledgement.",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
EMIT_FAILURES = Counter(
    "stream_emitter_failures_total",
    "Records the broker did not acknowledge.",
    ["topic"],
)

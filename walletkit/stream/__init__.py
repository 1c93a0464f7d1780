"""A Goka-style stream toolkit: emitters, processors and views on Kafka and RocksDB.

It knows nothing of wallets. An :class:`Emitter` writes records to a topic (in
transactions under exactly-once, the default). A :class:`Processor` consumes one input
stream as a consumer group, keeps a per-key table in a local RocksDB per partition, and
mirrors every change to the compacted changelog topic ``<group>-table``; each batch's
changelog records and input offsets commit in one transaction (:class:`Guarantee`), and
table values carry the input offset they reflect, so a replay is a no-op. A :class:`View`
follows such a changelog into a local replica. :class:`TableVersions` says which group
serves a table now. The :mod:`~walletkit.stream.tester` runs a group without a broker.

Code outside the toolkit imports from this package only (a test holds it to that); the
modules, in Goka's file map, are listed in docs/architecture.md.
"""

from walletkit.stream.checkpoint import Guarantee
from walletkit.stream.codec import (
    Codec,
    JsonCodec,
    JsonTableCodec,
    ProtobufCodec,
    ProtobufTableCodec,
    TableCodec,
    parse_message,
)
from walletkit.stream.context import REQUEST_ID_HEADER, Context
from walletkit.stream.emitter import DEFAULT_LANES, Delivery, Emitter
from walletkit.stream.errors import (
    BrokerUnavailable,
    CoPartitioningError,
    EmitError,
    ForeignTable,
    RestoreError,
    SkipRecord,
    StreamError,
    TopicsMissing,
    ValueTooLarge,
)
from walletkit.stream.faults import CrashInjector
from walletkit.stream.group import GroupSpec
from walletkit.stream.kafka import KafkaSettings, parse_kafka_config
from walletkit.stream.partitioner import partition_for
from walletkit.stream.processor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CACHE_ENTRIES,
    DEFAULT_MAX_VALUE_BYTES,
    Processor,
    ProcessorState,
)
from walletkit.stream.store import persistent_id
from walletkit.stream.table import trim_oldest
from walletkit.stream.topics import TopicManager, table_topic
from walletkit.stream.versions import (
    TableVersion,
    TableVersions,
    VersionWatch,
    committed_offsets,
    group_has_passed,
    readable_ends,
)
from walletkit.stream.view import View, ViewState

__all__ = [
    "BrokerUnavailable",
    "Codec",
    "CoPartitioningError",
    "Context",
    "CrashInjector",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CACHE_ENTRIES",
    "DEFAULT_LANES",
    "DEFAULT_MAX_VALUE_BYTES",
    "Delivery",
    "EmitError",
    "Emitter",
    "ForeignTable",
    "GroupSpec",
    "Guarantee",
    "JsonCodec",
    "JsonTableCodec",
    "KafkaSettings",
    "Processor",
    "ProcessorState",
    "ProtobufCodec",
    "ProtobufTableCodec",
    "REQUEST_ID_HEADER",
    "RestoreError",
    "SkipRecord",
    "StreamError",
    "TableCodec",
    "TableVersion",
    "TableVersions",
    "TopicManager",
    "TopicsMissing",
    "ValueTooLarge",
    "VersionWatch",
    "View",
    "ViewState",
    "committed_offsets",
    "group_has_passed",
    "parse_kafka_config",
    "parse_message",
    "partition_for",
    "persistent_id",
    "readable_ends",
    "table_topic",
    "trim_oldest",
]

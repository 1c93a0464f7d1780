"""A Goka-style stream toolkit: emitters, processors, views on Kafka and RocksDB.

It knows nothing of wallets. A processor consumes one input stream as a consumer
group, keeps a per-key table in a local RocksDB per partition, and mirrors every
change to the compacted changelog topic ``<group>-table``; a view follows such a
changelog into a local replica. Table values carry the input offset they reflect,
which makes replays after a crash harmless (effectively-once without transactions).
"""

from walletkit.stream.codec import Codec, TableCodec
from walletkit.stream.context import Context
from walletkit.stream.emitter import Emitter, Delivery
from walletkit.stream.errors import (
    StreamError,
    BrokerUnavailable,
    EmitError,
    CoPartitioningError,
    ForeignTable,
    SkipRecord,
    RestoreError,
)
from walletkit.stream.kafka import KafkaSettings
from walletkit.stream.processor import GroupSpec, Processor, ProcessorState
from walletkit.stream.topics import TopicManager, table_topic
from walletkit.stream.view import View, ViewState

__all__ = [
    "Codec", "TableCodec", "Context", "Emitter", "Delivery", "StreamError", "BrokerUnavailable",
    "EmitError", "CoPartitioningError", "ForeignTable", "SkipRecord", "RestoreError", "KafkaSettings",
    "GroupSpec", "Processor", "ProcessorState", "TopicManager", "table_topic", "View", "ViewState",
]

"""What a processor group is: its input, its table and its callbacks (Goka's group graph)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from walletkit.stream.codec import Codec, TableCodec
from walletkit.stream.context import Context
from walletkit.stream.topics import table_topic


@dataclass(frozen=True)
class GroupSpec:
    """What a processor group consumes, keeps and does (Goka's group graph)."""

    group: str
    input_topic: str
    input_codec: Codec
    table_codec: TableCodec
    #: ``callback(ctx, value)`` for every input record, in offset order per key.
    #: It must be deterministic given the table value and the record.
    callback: Callable[[Context, Any], None]
    #: ``quarantine(ctx, reason)`` for a record the table refused (ValueTooLarge): note it
    #: for its key (say, in a side entry) so readers can learn it was not applied. None: only
    #: counted and logged.
    quarantine: Callable[[Context, str], None] | None = None
    #: Topics the callback may ``ctx.emit()`` to, with the codec of each (they must exist).
    outputs: Mapping[str, Codec] = field(default_factory=dict)
    #: Tables of other groups (their changelog topics, with their codecs), co-partitioned with
    #: the input, that the callback reads with ``ctx.join(topic)`` (Goka's Join). A member keeps
    #: the partitions it owns of each in a local copy, restored before it processes and
    #: followed after: a joined value is as fresh as that copy, so it may lag the other group.
    joins: Mapping[str, TableCodec] = field(default_factory=dict)

    @property
    def table_topic(self) -> str:
        return table_topic(self.group)

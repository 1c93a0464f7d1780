"""Named errors of the stream toolkit."""


class StreamError(Exception):
    """Base class of every error the stream toolkit raises."""


class BrokerUnavailable(StreamError):
    """The Kafka cluster could not be reached within the configured time."""


class ClientStuck(StreamError):
    """A Kafka client call overran its timeout (``BoundedCalls``): the client is left behind.

    ``returned`` is set once the call finally returns (the client may be dropped then).
    """

    def __init__(self, message: str, returned=None) -> None:
        super().__init__(message)
        self.returned = returned


class EmitError(StreamError):
    """A record was not acknowledged by the broker.

    After a delivery timeout it may still have been stored (the broker may append
    it late): clients retry with an idempotency key. ``producer_replaced`` marks a
    refusal by the broker of a fenced producer: certainly not stored.
    """

    producer_replaced = False


class TopicsMissing(StreamError):
    """Topics the service needs do not exist (yet: an operator may still be creating them)."""

    def __init__(self, topics: list[str]) -> None:
        super().__init__(f"topics missing: {', '.join(topics)}")
        self.topics = list(topics)


class CoPartitioningError(StreamError):
    """Topics that must be co-partitioned have different partition counts."""


class RestoreError(StreamError):
    """A partition's table could not be restored from its changelog."""


class ForeignTable(StreamError):
    """A group with nothing committed for a partition whose table holds values that carry no
    applied offset: another program wrote them (a Goka processor, say), so processing the
    input from its start would apply every record again on top of them. Not started: taking
    over such a table exactly is an operator's step (rebuild it from the input)."""

    def __init__(self, group: str, table: str, input_topic: str, partition: int, key: str) -> None:
        super().__init__(
            f"group {group!r} has no committed offset on {input_topic!r}[{partition}], but table {table!r} "
            f"partition {partition} holds values this toolkit did not write (the value of {key!r} carries no "
            f"applied offset): another program built that table, and its offsets were never committed (or have "
            f"expired). Starting at {input_topic!r}[{partition}]'s first record would apply every record again "
            "on top of those values and count each twice; the partition is not processed"
        )
        self.group = group
        self.table = table
        self.partition = partition
        self.key = key


class SkipRecord(StreamError):
    """Raised by a codec or callback for a record that can never be processed.

    The processor counts it, logs it with the reason and moves on: the record's
    offset is consumed and the table is left unchanged. Any other exception from a
    callback stops the processor without committing, so the record is retried.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ValueTooLarge(SkipRecord):
    """A record would make its key's table value larger than a changelog record may be.

    Raised by the table, not by callbacks: the processor quarantines the record (its
    group's ``quarantine`` hook notes it) and the rest of the partition keeps flowing,
    instead of every restart failing on the same oversized write.
    """

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__("value_too_large", f"the value of {key!r} would be {size} bytes, over the limit of {limit}")
        self.key = key
        self.size = size
        self.limit = limit

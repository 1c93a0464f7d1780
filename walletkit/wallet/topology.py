"""Names shared by every wallet service: topics and groups (contracts, see DESIGN.md)."""

from walletkit.stream.topics import TopicManager, table_topic

DEPOSIT_TOPIC = "deposit"
BALANCE_GROUP = "balance"
ABOVE_THRESHOLD_GROUP = "above_threshold"
BALANCE_TABLE = table_topic(BALANCE_GROUP)                   # "balance-table"
ABOVE_THRESHOLD_TABLE = table_topic(ABOVE_THRESHOLD_GROUP)   # "above_threshold-table"
ALL_TOPICS = (DEPOSIT_TOPIC, BALANCE_TABLE, ABOVE_THRESHOLD_TABLE)
DEFAULT_PARTITIONS = 8


def ensure_topics(topics: TopicManager, partitions: int, *, create: bool) -> int:
    """Create the wallet topics if asked, then check they are co-partitioned.

    Returns the common partition count; raises CoPartitioningError when the
    existing topics disagree (a key's input and table would be split).
    """
    if create:
        topics.ensure_stream(DEPOSIT_TOPIC, partitions)
        topics.ensure_table(BALANCE_TABLE, partitions)
        topics.ensure_table(ABOVE_THRESHOLD_TABLE, partitions)
    return topics.ensure_copartitioned(list(ALL_TOPICS))

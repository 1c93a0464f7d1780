"""Names shared by every wallet service: topics and groups (contracts, see DESIGN.md)."""

from walletkit.stream.topics import TopicManager, table_topic
from walletkit.stream.versions import TableVersion, TableVersions

DEPOSIT_TOPIC = "deposit"
BALANCE_GROUP = "balance"
ABOVE_THRESHOLD_GROUP = "above_threshold"
BALANCE_TABLE = table_topic(BALANCE_GROUP)                   # "balance-table"
ABOVE_THRESHOLD_TABLE = table_topic(ABOVE_THRESHOLD_GROUP)   # "above_threshold-table"
ALL_TOPICS = (DEPOSIT_TOPIC, BALANCE_TABLE, ABOVE_THRESHOLD_TABLE)
#: Which group serves each table now (walletkit.stream.versions; written by walletctl rebuild).
TABLE_VERSIONS_TOPIC = "table-versions"
#: The processor groups, by base name (version 1's group and the key of their versions).
GROUPS = (BALANCE_GROUP, ABOVE_THRESHOLD_GROUP)
DEFAULT_PARTITIONS = 8


def live_groups(versions: dict[str, TableVersion]) -> dict[str, str]:
    """The group serving each table now (its base name until a rebuild switched it)."""
    return {base: versions[base].group if base in versions else base for base in GROUPS}


def ensure_topics(topics: TopicManager, partitions: int, *, create: bool) -> int:
    """Create the wallet topics if asked, then check they are co-partitioned.

    The tables are those of the live versions (walletkit.stream.versions): a table
    rebuilt by ``walletctl rebuild`` is checked (and created) under its new name, and a
    retired one is not brought back. Returns the common partition count; raises
    CoPartitioningError when the existing topics disagree (a key's input and table
    would be split).
    """
    if create:
        topics.ensure_stream(DEPOSIT_TOPIC, partitions)
        topics.ensure_table(TABLE_VERSIONS_TOPIC, 1)
    tables = [table_topic(group) for group in live_groups(TableVersions(topics.settings, TABLE_VERSIONS_TOPIC).read())
              .values()]
    if create:
        for table in tables:
            topics.ensure_table(table, partitions)
    return topics.ensure_copartitioned([DEPOSIT_TOPIC, *tables])

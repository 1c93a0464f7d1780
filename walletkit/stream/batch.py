"""One batch of input records run through a group's callback (no broker, no clients).

:class:`BatchRunner` takes consumed records (anything with Kafka's ``Message`` accessors:
``error() key() value() partition() offset() timestamp() headers()``) and the table
partitions they belong to, and returns a :class:`Batch`: one
:class:`~walletkit.stream.table.Transaction` per partition, the outcome of each record and
the oldest record's timestamp. Making the batch durable is the
:class:`~walletkit.stream.checkpoint.Checkpoint`'s; this module never writes a store.

For each record, in offset order per key:

1. a record without a UTF-8 key changes nothing: ``skipped``;
2. a record whose key's value already reflects its offset is a replay: ``duplicate``;
3. else the callback runs over the key's value in the batch's transaction: ``processed``,
   or ``skipped`` if it raised :class:`~walletkit.stream.errors.SkipRecord`;
4. a write the table refuses (:class:`~walletkit.stream.errors.ValueTooLarge`) quarantines
   the record (see :meth:`BatchRunner._apply`): ``quarantined``.

Any other error from a callback (a bug) propagates: nothing is committed, and the record is
retried rather than lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError

from walletkit.stream.context import Context, request_id_of
from walletkit.stream.errors import SkipRecord, StreamError, ValueTooLarge
from walletkit.stream.group import GroupSpec
from walletkit.stream.table import TablePartition, Transaction

log = logging.getLogger("walletkit.stream.processor")  # one logger for the processor's lines

#: What becomes of an input record (label of metrics.RECORDS).
OUTCOMES = ("processed", "duplicate", "skipped", "quarantined")


@dataclass
class Quarantine:
    """What one batch quarantined: the records, the keys that run with snapshots since."""

    reasons: dict[tuple[int, int], str] = field(default_factory=dict)  # (partition, offset) -> why
    hot: set[tuple[int, str]] = field(default_factory=set)  # (partition, key)
    replaying: bool = False


@dataclass
class Batch:
    """A run batch: its transactions (by partition), outcomes and oldest timestamp."""

    txns: dict[int, Transaction] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    #: The outcome of each record run, in order (records of other partitions and consumer
    #: errors have none).
    outcomes: list[str] = field(default_factory=list)
    #: Timestamp (ms) of the batch's oldest record (the first of each partition); 0 if none had one.
    oldest_ms: int = 0


class BatchRunner:
    """Runs records through ``spec``'s callback over the table partitions given to :meth:`run`."""

    def __init__(self, spec: GroupSpec) -> None:
        self.spec = spec
        self._joined: Mapping[int, Mapping[str, TablePartition]] = {}

    def run(
        self,
        msgs: Sequence[Any],
        tables: Mapping[int, TablePartition],
        joined: Mapping[int, Mapping[str, TablePartition]] | None = None,
    ) -> Batch:
        """Run ``msgs``; a record of a partition not in ``tables`` (revoked meanwhile) is left
        to its new owner. ``joined``: each partition's copies of the joined tables. A fatal
        consumer error raises StreamError."""
        self._joined = joined or {}
        spec = self.spec
        batch, quarantine = Batch(), Quarantine()
        txns, counts, outcomes = batch.txns, batch.counts, batch.outcomes
        # One line per record at debug level, with the id of the request that caused it
        # (WALLET_LOG_LEVEL=info,walletkit.stream.processor=debug follows deposits through).
        trace = log.isEnabledFor(logging.DEBUG)
        for i, m in enumerate(msgs):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise StreamError(f"consumer: {err.str()}")
                log.warning("consumer: %s", err.str())
                continue
            p = m.partition()
            txn = txns.get(p)
            if txn is None:
                part = tables.get(p)
                if part is None:
                    continue  # revoked meanwhile: its new owner processes it
                txn = txns[p] = part.begin()
                txn.first_offset = m.offset()
                ts_type, ts_ms = m.timestamp()
                if ts_type and ts_ms > 0 and (not batch.oldest_ms or ts_ms < batch.oldest_ms):
                    batch.oldest_ms = ts_ms
            offset = txn.last_offset = m.offset()
            raw_key = m.key()
            try:
                key = raw_key.decode() if raw_key is not None else None
            except UnicodeDecodeError:
                key = None
            if key is None:  # no table key: nothing it could change
                counts["skipped"] += 1
                outcomes.append("skipped")
                log.warning(
                    "group %s: skipping record %s[%d]@%d: no UTF-8 key", spec.group, spec.input_topic, p, offset
                )
                continue
            outcome = self._apply(txn, key, m, msgs, i, quarantine)
            counts[outcome] += 1
            outcomes.append(outcome)
            if trace:
                log.debug(
                    "group %s: record %s",
                    spec.group,
                    outcome,
                    extra={"record_key": key, "partition": p, "offset": offset, "request_id": request_id_of(m)},
                )
        return batch

    def _apply(
        self, txn: Transaction, key: str, m: Any, msgs: Sequence[Any], index: int, quarantine: Quarantine
    ) -> str:
        """Apply one record to its key in ``txn``; its outcome (see OUTCOMES).

        A record the table refuses (ValueTooLarge) is quarantined, and nothing has left the
        process yet. The first time in a batch, the batch's writes of its key (and side
        entries) are dropped and the key's earlier records of the batch applied again; from
        then on the key's records run with snapshots, so a refusal is undone in place. Other
        keys are untouched either way, and a replay decides exactly the same.
        """
        spec = self.spec
        p, offset = m.partition(), m.offset()
        current = txn.get(key)
        if current is not None and spec.table_codec.applied_offset(current) >= offset:
            return "duplicate"
        reason = quarantine.reasons.get((p, offset))
        if reason is not None:  # only while re-applying the key's earlier records
            self._note_quarantine(txn, key, m, reason)
            return "quarantined"
        hot = (p, key) in quarantine.hot
        ctx = Context(
            txn, spec.table_codec, key, p, offset, m, snapshot=hot, outputs=spec.outputs, joined=self._joined.get(p)
        )
        try:
            spec.callback(ctx, spec.input_codec.decode(m.value()))
            return "processed"
        except ValueTooLarge as exc:
            if quarantine.replaying:
                raise StreamError(
                    f"group {spec.group}: re-applying {spec.input_topic}[{p}]@{offset} was refused "
                    f"({exc}) although it was accepted before: callbacks must be deterministic"
                ) from exc
            log.error(
                "group %s: quarantining record %s[%d]@%d: %s; the rest of the partition goes on",
                spec.group,
                spec.input_topic,
                p,
                offset,
                exc,
                extra={"record_key": key, "partition": p, "offset": offset},
            )
            quarantine.reasons[(p, offset)] = str(exc)
            if hot:
                ctx.undo()
            else:
                ctx.discard_emits()
                self._replay_key(txn, key, m, msgs[:index], quarantine)
            self._note_quarantine(txn, key, m, str(exc))
            return "quarantined"
        except SkipRecord as exc:
            if hot:
                ctx.undo()  # the callback may have changed the value before it refused the record
            else:
                ctx.discard_emits()
            log.warning(
                "group %s: skipping record %s[%d]@%d: %s",
                spec.group,
                spec.input_topic,
                p,
                offset,
                exc,
                extra={"record_key": key, "partition": p, "offset": offset},
            )
            return "skipped"

    def _replay_key(self, txn: Transaction, key: str, m: Any, earlier: Sequence[Any], quarantine: Quarantine) -> None:
        """A key's first refusal in the batch: drop the batch's writes of it and apply its earlier
        records again (the quarantined ones only noted); from now on it runs with snapshots."""
        txn.forget(key)
        quarantine.replaying = True
        try:
            p, raw_key = m.partition(), m.key()
            for record in earlier:
                if record.error() is None and record.partition() == p and record.key() == raw_key:
                    self._apply(txn, key, record, (), 0, quarantine)
        finally:
            quarantine.replaying = False
        quarantine.hot.add((m.partition(), key))

    def _note_quarantine(self, txn: Transaction, key: str, m: Any, reason: str) -> None:
        """The group's hook notes the record for its key; a note that does not fit is undone."""
        if self.spec.quarantine is None:
            return
        ctx = Context(txn, self.spec.table_codec, key, m.partition(), m.offset(), m, snapshot=True)
        try:
            self.spec.quarantine(ctx, reason)
        except ValueTooLarge as exc:  # even the note does not fit: counted and logged only
            ctx.undo()
            log.error(
                "group %s: cannot note the quarantine of %s[%d]@%d: %s",
                self.spec.group,
                self.spec.input_topic,
                m.partition(),
                m.offset(),
                exc,
            )

"""The processor's parts through the tester (walletkit.stream.tester): the batch runner, the
checkpoint and the real ChangelogWriter over an in-memory log (MemoryLog stands in for the
broker here; the integration and fault suites run the same parts on Apache Kafka).

The checkpoint's discipline, shown by crashing a member between every two steps of a batch:
whatever the point and the guarantee, after a restart every record is counted once, in the
table and in its changelog.
"""

from __future__ import annotations

import dataclasses

import pytest

from wallet_balance.processor import balance_group
from walletkit.stream import Context, GroupSpec, JsonCodec, JsonTableCodec, SkipRecord
from walletkit.stream.checkpoint import Checkpoint, CheckpointFailed, Guarantee
from walletkit.stream.tester import CRASH_POINTS, Crashed, MemoryProducer, Tester
from walletkit.wallet import money
from walletkit.wallet.codecs import wallet_balance_micros
from walletkit.wallet.wallet_pb2 import DepositRequest

S = money.SCALE
GUARANTEES = [Guarantee.EXACTLY_ONCE, Guarantee.APPLIED_OFFSETS]


def deposit(amount: int, key: str | None = None) -> DepositRequest:
    d = DepositRequest(WalletID="w", Amount=float(amount), AmountMicros=amount * S, CreatedAtMicros=1)
    if key:
        d.IdempotencyKey = key
    return d


def balance(tester: Tester, wallet: str, source: str = "table") -> int | None:
    value = tester.value(wallet) if source == "table" else tester.changelog(wallet)
    return wallet_balance_micros(value) // S if value is not None else None


@pytest.mark.parametrize("guarantee", GUARANTEES, ids=lambda g: g.value)
def test_records_in_table_and_changelog_out(guarantee):
    with Tester(balance_group(), partitions=4, guarantee=guarantee) as t:
        for i in range(1, 21):
            t.feed(f"w{i % 5}", deposit(i))
        batches = t.process()
        assert sum(b.counts["processed"] for b in batches) == 20
        expected = {f"w{k}": sum(i for i in range(1, 21) if i % 5 == k) for k in range(5)}
        assert {w: balance(t, w) for w in expected} == expected
        assert {w: balance(t, w, "changelog") for w in expected} == expected
        assert t.process() == []  # nothing new: nothing run


@pytest.mark.parametrize("guarantee", GUARANTEES, ids=lambda g: g.value)
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_between_any_two_steps_of_a_batch_counts_every_record_once(guarantee, point):
    with Tester(balance_group(), guarantee=guarantee) as t:
        t.feed("w", deposit(5))
        t.process()
        t.feed("w", deposit(7))
        t.feed("v", deposit(1))
        with pytest.raises(Crashed):
            t.process(crash_at=point)
        with pytest.raises(RuntimeError, match="restart"):
            t.process()
        t.restart()
        t.process()
        assert (balance(t, "w"), balance(t, "v")) == (12, 1)
        assert (balance(t, "w", "changelog"), balance(t, "v", "changelog")) == (12, 1)
        t.restart(lose_state=True)  # and a new disk restores the same from the changelog
        assert (balance(t, "w"), balance(t, "v")) == (12, 1)


def test_an_open_transaction_of_a_crashed_member_is_never_read_and_its_offsets_never_committed():
    with Tester(balance_group()) as t:
        t.feed("w", deposit(5))
        with pytest.raises(Crashed):
            t.process(crash_at="after_changelog")
        assert t.changelog("w") is None and t.committed() == -1
        t.restart()  # the new registration aborts what the crashed member left open
        assert t.changelog("w") is None and t.value("w") is None
        t.process()
        assert balance(t, "w") == 5 and t.committed() == 1


def test_applied_offsets_replays_after_a_crash_past_the_store_and_skips_the_replays():
    with Tester(balance_group(), guarantee=Guarantee.APPLIED_OFFSETS) as t:
        t.feed("w", deposit(5))
        with pytest.raises(Crashed):
            t.process(crash_at="after_store")
        assert t.committed() == -1  # the input offset was not committed: the record comes again
        t.restart()
        batches = t.process()
        assert [b.counts["duplicate"] for b in batches] == [1] and balance(t, "w") == 5


def test_a_fenced_writer_cannot_commit_a_batch():
    """A member whose transactional id was registered again (its successor) is refused."""
    with Tester(balance_group()) as t:
        old = t._writer
        t.restart()  # the successor registers the same transactional id
        t.feed("w", deposit(5))
        checkpoint = checkpoint_of(t, writer=old)
        with pytest.raises(CheckpointFailed) as refused:
            checkpoint.prepare()
        assert refused.value.fenced
        assert t.changelog("w") is None


def test_the_checkpoint_refuses_steps_out_of_order():
    with Tester(balance_group()) as t:
        t.feed("w", deposit(5))
        checkpoint = checkpoint_of(t)
        with pytest.raises(RuntimeError, match="expected prepared"):
            checkpoint.commit()
        with pytest.raises(RuntimeError, match="expected committed"):
            checkpoint.flush()
        checkpoint.prepare()
        checkpoint.commit()
        checkpoint.flush()
        with pytest.raises(RuntimeError, match="cannot be aborted"):
            checkpoint.abort(CheckpointFailed("late"), set())


def test_a_checkpoint_of_a_member_that_changed_is_refused_as_fenced():
    with Tester(balance_group()) as t:
        t.feed("w", deposit(5))
        checkpoint = checkpoint_of(t, member="a member that left")
        with pytest.raises(CheckpointFailed) as refused:
            checkpoint.prepare()
        assert refused.value.fenced and t.changelog("w") is None


def test_idempotency_keys_through_the_tester():
    with Tester(balance_group()) as t:
        t.feed("w", deposit(5, key="order-1"))
        t.feed("w", deposit(5, key="order-1"))  # a retry: applied once
        t.feed("w", deposit(2, key="order-2"))
        t.process()
        assert balance(t, "w") == 7


def test_the_memory_producer_fences_an_older_instance():
    from walletkit.stream.tester import MemoryLog

    log = MemoryLog()
    log.create("t", 1)
    first = MemoryProducer(log, **{"transactional.id": "x"})
    first.init_transactions()
    first.begin_transaction()
    first.produce("t", b"v", b"k", partition=0)
    second = MemoryProducer(log, **{"transactional.id": "x"})
    second.init_transactions()  # aborts what the first left open
    assert log.read("t", 0) == []
    with pytest.raises(Exception, match="fenced"):
        first.commit_transaction()


def checkpoint_of(t: Tester, writer=None, member: str = "tester") -> Checkpoint:
    """A checkpoint of the tester's unconsumed input, run through its group, by hand."""
    batch = t._runner.run(t.log.read(t.spec.input_topic, 0), t.tables)
    return Checkpoint(
        batch.txns,
        writer or t._writer,
        _Consumer(),
        input_topic=t.spec.input_topic,
        table_topic=t.spec.table_topic,
        member=(member, t.spec.group),
    )


class _Consumer:
    def memberid(self) -> str:
        return "tester"

    def seek(self, tp) -> None:
        pass


# -- the callback vocabulary: delete and emit --------------------------------------------


def counter_group(limit: int = 3) -> GroupSpec:
    """Counts each key's records; "close" deletes the key; every count reaching ``limit``
    is emitted to "milestones"; a record "skip" emits, then refuses itself."""

    def on_record(ctx: Context, value: dict) -> None:
        if value["op"] == "close":
            ctx.delete()
            ctx.emit("milestones", ctx.key, None)
            return
        if value["op"] == "skip":
            ctx.emit("milestones", ctx.key, {"n": -1})
            raise SkipRecord("refused", "a record that refuses itself")
        counts = ctx.value() or {"n": 0}
        counts["n"] += 1
        ctx.set_value(counts)
        if counts["n"] % limit == 0:
            ctx.emit("milestones", ctx.key, {"n": counts["n"]})

    return GroupSpec(
        group="counter",
        input_topic="events",
        input_codec=JsonCodec(),
        table_codec=JsonTableCodec(),
        callback=on_record,
        outputs={"milestones": JsonCodec()},
    )


def test_emitted_records_leave_with_the_batch_and_a_refused_record_emits_nothing():
    with Tester(counter_group()) as t:
        for op in ["add", "add", "skip", "add", "add"]:
            t.feed("k", {"op": op})
        t.process()
        assert t.value("k")["n"] == 4
        assert t.emitted("milestones") == [("k", {"n": 3})]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_an_emit_is_seen_once_under_exactly_once_whatever_the_crash(point):
    with Tester(counter_group()) as t:
        for _ in range(3):
            t.feed("k", {"op": "add"})
        with pytest.raises(Crashed):
            t.process(crash_at=point)
        t.restart()
        t.process()
        assert t.emitted("milestones") == [("k", {"n": 3})] and t.value("k")["n"] == 3


def test_a_deleted_key_is_gone_from_the_table_its_changelog_and_a_restore():
    with Tester(counter_group()) as t:
        t.feed("k", {"op": "add"})
        t.feed("j", {"op": "add"})
        t.process()
        t.feed("k", {"op": "close"})
        t.process()
        assert t.value("k") is None and t.changelog("k") is None and t.value("j")["n"] == 1
        assert t.emitted("milestones") == [("k", None)]  # a tombstone emitted
        t.restart(lose_state=True)
        assert t.value("k") is None and t.value("j")["n"] == 1
        t.feed("k", {"op": "add"})  # a new life for the key
        t.process()
        assert t.value("k")["n"] == 1


def test_emitting_to_a_topic_the_group_does_not_declare_stops_the_batch():
    spec = dataclasses.replace(counter_group(), outputs={})
    with Tester(spec) as t:
        for _ in range(3):
            t.feed("k", {"op": "add"})
        with pytest.raises(ValueError, match="not an output"):
            t.process()
        assert t.changelog("k") is None


# -- join: another group's co-partitioned table, read by key --------------------------------


def limited_group() -> GroupSpec:
    """Deposits applied only up to the wallet's limit, read from another group's table."""

    def on_deposit(ctx: Context, value: dict) -> None:
        limit = ctx.join("limits-table")
        if limit is None:
            raise SkipRecord("no_limit", "a wallet without a limit takes nothing")
        total = ctx.value() or {"total": 0}
        total["total"] = min(total["total"] + value["amount"], limit["max"])
        ctx.set_value(total)

    return GroupSpec(
        group="limited",
        input_topic="deposits",
        input_codec=JsonCodec(),
        table_codec=JsonTableCodec(),
        callback=on_deposit,
        joins={"limits-table": JsonTableCodec()},
    )


def test_a_joined_table_is_read_by_the_records_key_as_it_is_when_the_batch_runs():
    with Tester(limited_group(), partitions=4) as t:
        t.feed("a", {"amount": 5})  # no limit yet: skipped
        t.process()
        assert t.value("a") is None
        t.put("limits-table", "a", {"max": 12})
        t.put("limits-table", "b", {"max": 100})
        for wallet, amount in [("a", 5), ("a", 5), ("a", 5), ("b", 7)]:
            t.feed(wallet, {"amount": amount})
        t.process()
        assert (t.value("a")["total"], t.value("b")["total"]) == (12, 7)
        t.put("limits-table", "a", {"max": 20})
        t.feed("a", {"amount": 5})
        t.process()
        assert t.value("a")["total"] == 17
        t.restart(lose_state=True)  # the copy of the joined table comes back from its changelog
        t.feed("a", {"amount": 5})
        t.process()
        assert t.value("a")["total"] == 20


def test_reading_a_table_the_group_does_not_join_stops_the_batch():
    spec = dataclasses.replace(limited_group(), joins={})
    with Tester(spec) as t:
        t.feed("a", {"amount": 5})
        with pytest.raises(ValueError, match="not a joined table"):
            t.process()


def test_the_fence_knobs_parse_and_unknown_ones_are_refused():
    from walletkit.stream.faults import CrashInjector

    knobs = CrashInjector("pause_before_changelog=1,no_local_fence=1,linger_after_pause=2.5")
    assert (knobs.local_fence, knobs.linger_after_pause, knobs.odds) == (False, 2.5, {"pause_before_changelog": 1.0})
    assert CrashInjector("after_commit=0.1").local_fence is True
    with pytest.raises(ValueError, match="no_local_fence"):
        CrashInjector("no_such_knob=1")

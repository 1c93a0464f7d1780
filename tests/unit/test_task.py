"""A partition task's one state: the moves the diagram of walletkit/stream/task.py allows, and
only those; what a revocation and a new assignment clear."""

from __future__ import annotations

import pytest

from walletkit.stream.task import PartitionTask, TaskState

S = TaskState
ASSIGNED = (S.RESTORING, S.ACTIVATING, S.RUNNING, S.REBUILDING)


def task_in(state: TaskState) -> PartitionTask:
    task = PartitionTask(3, table=None)  # the moves never touch the table
    path = {
        S.IDLE: [],
        S.STANDBY: [S.STANDBY],
        S.RESTORING: [S.RESTORING],
        S.ACTIVATING: [S.RESTORING, S.ACTIVATING],
        S.RUNNING: [S.RESTORING, S.ACTIVATING, S.RUNNING],
        S.REBUILDING: [S.RESTORING, S.ACTIVATING, S.REBUILDING],
    }[state]
    for step in path:
        task.move(step)
    assert task.state is state
    return task


ALLOWED = {
    (S.IDLE, S.RESTORING),
    (S.IDLE, S.STANDBY),
    (S.STANDBY, S.RESTORING),
    (S.STANDBY, S.IDLE),
    (S.RESTORING, S.ACTIVATING),
    (S.ACTIVATING, S.RUNNING),
    (S.ACTIVATING, S.REBUILDING),
    (S.REBUILDING, S.RUNNING),
    *((a, S.RESTORING) for a in ASSIGNED),
    *((a, S.IDLE) for a in ASSIGNED),
    *((a, S.STANDBY) for a in ASSIGNED),
}


@pytest.mark.parametrize("start", list(S), ids=lambda s: s.value)
@pytest.mark.parametrize("to", list(S), ids=lambda s: s.value)
def test_only_the_drawn_moves_are_allowed(start, to):
    task = task_in(start)
    if (start, to) in ALLOWED:
        task.move(to)
        assert task.state is to
    else:
        with pytest.raises(RuntimeError, match=f"{start.value} cannot become {to.value}"):
            task.move(to)
        assert task.state is start


@pytest.mark.parametrize("state", ASSIGNED, ids=lambda s: s.value)
def test_a_revocation_drops_the_pending_commit_and_the_rebuild(state):
    task = task_in(state)
    task.pending_commit, task.rebuild_until = 41, 99
    task.move(S.IDLE)
    assert (task.pending_commit, task.rebuild_until) == (None, None)


def test_a_rebuild_ends_once_the_input_passed_the_offset_it_was_consumed_to():
    task = task_in(S.REBUILDING)
    task.rebuild_until = 100
    assert not task.passed(99) and task.state is S.REBUILDING
    assert task.passed(100) and task.state is S.RUNNING
    assert not task.passed(200)  # running: nothing more to pass


def test_owned_and_restoring_follow_the_state():
    assert [s for s in S if task_in(s).owned] == [S.RUNNING, S.REBUILDING]
    assert [s for s in S if task_in(s).restoring] == [S.RESTORING, S.ACTIVATING]
    assert [s for s in S if task_in(s).assigned] == list(ASSIGNED)


def test_a_partition_emptied_by_deletes_is_not_taken_for_a_lost_table(tmp_path):
    """Empty with the input consumed is a lost table only if the store never saw its changelog:
    a partition whose every key was deleted has read (or written) the tombstones."""
    from wallet_balance.processor import balance_group
    from walletkit.stream.store import Store
    from walletkit.stream.table import TablePartition

    spec = balance_group()
    table = TablePartition(Store(tmp_path / "p"), spec.table_codec, 2)
    task = PartitionTask(2, table)
    starts = []
    assert task.lost_table_start(spec, 5, lambda: starts.append(1) or 0) == 0  # never saw its changelog: lost
    table.store.write([(b"w", None)], table.checkpoint(3))  # a tombstone read: the key was deleted
    assert task.lost_table_start(spec, 5, lambda: 0) is None
    table.close()

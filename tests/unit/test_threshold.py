"""The threshold rule (wallet_above_threshold.threshold): DESIGN "The threshold flag".

The incremental ``WindowState`` is checked against the O(n^2) oracle
``flagged_by_definition`` and both against the DESIGN examples.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from wallet_above_threshold.threshold import MICROS, Entry, Rule, WindowState, flagged_by_definition
from walletkit.wallet import money

S = money.SCALE  # micro-units per currency unit
SEC = MICROS  # microseconds per second
RULE = Rule()
T0 = 1_700_000_000 * SEC  # a realistic Unix time in microseconds


def units(x: str | int) -> int:
    """Exact micro-units of a decimal amount."""
    return int(Decimal(str(x)) * S)


def replay(deposits: list[tuple[int, int]], rule: Rule = RULE) -> tuple[WindowState, list[bool]]:
    """Apply (time, amount) deposits in the given arrival order; offsets are arrival order."""
    state = WindowState()
    returns = [state.add(Entry(at=at, offset=i, amount=amount), rule) for i, (at, amount) in enumerate(deposits)]
    return state, returns


def both(deposits: list[tuple[int, int]], rule: Rule = RULE) -> tuple[bool, bool]:
    state, _ = replay(deposits, rule)
    return state.flagged, flagged_by_definition(sorted(deposits), rule)


# --- Rule and Entry ---------------------------------------------------------------------


def test_rule_defaults_are_the_design_defaults():
    assert RULE.threshold == 10_000 * S == 10_000_000_000
    assert RULE.window == 120 * SEC
    assert RULE.lateness >= 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": -1},
        {"window": 0},
        {"window": -SEC},
        {"lateness": -1},
    ],
)
def test_rule_rejects_invalid_parameters(kwargs):
    with pytest.raises(ValueError, match="required"):
        Rule(**kwargs)


def test_rule_is_immutable():
    with pytest.raises(AttributeError):
        RULE.threshold = 1  # type: ignore[misc]


def test_entry_orders_by_time_then_offset_ignoring_amount_and_cumulative():
    a = Entry(at=10, offset=5, amount=1, cumulative=99)
    b = Entry(at=10, offset=6, amount=0)
    c = Entry(at=11, offset=0, amount=7)
    assert a < b < c
    assert sorted([c, b, a]) == [a, b, c]
    assert Entry(at=1, offset=1, amount=1) == Entry(at=1, offset=1, amount=2, cumulative=3)
    assert Entry(at=1, offset=1, amount=1) != Entry(at=1, offset=2, amount=1)


# --- DESIGN examples, exactly -----------------------------------------------------------


@pytest.mark.parametrize("gap", [0, 1, 60 * SEC, 120 * SEC - 1])
def test_two_deposits_of_6000_within_two_minutes_flag(gap):
    deposits = [(T0, units(6000)), (T0 + gap, units(6000))]
    assert both(deposits) == (True, True)
    # ... in either arrival order
    assert both(deposits[::-1]) == (True, True)


def test_6000_then_6000_exactly_120_s_later_does_not_flag():
    deposits = [(T0, units(6000)), (T0 + 120 * SEC, units(6000))]
    assert both(deposits) == (False, False)
    assert both(deposits[::-1]) == (False, False)


def test_six_deposits_of_2000_within_two_minutes_flag():
    deposits = [(T0 + i * 20 * SEC, units(2000)) for i in range(6)]  # spans 100 s
    assert both(deposits) == (True, True)


def test_five_deposits_of_2000_within_two_minutes_do_not_flag():
    deposits = [(T0 + i * 20 * SEC, units(2000)) for i in range(5)]  # sums to exactly 10,000
    assert both(deposits) == (False, False)


def test_six_deposits_of_2000_spread_over_more_than_the_window_do_not_flag():
    deposits = [(T0 + i * 24 * SEC, units(2000)) for i in range(6)]  # first and last 120 s apart
    assert both(deposits) == (False, False)


def test_one_deposit_of_10000_does_not_flag():
    assert both([(T0, units(10_000))]) == (False, False)


def test_strictly_more_by_one_micro_unit_flags():
    # 10,000.000001 is representable internally (6 decimals) and is strictly more.
    assert units("10000.000001") == 10_000 * S + 1
    assert both([(T0, units("10000.000001"))]) == (True, True)


def test_strictly_more_at_api_precision_flags():
    # The API accepts 2 decimals: the smallest amount above 10,000 it accepts is 10,000.01.
    micros = money.decimal_to_micros(Decimal("10000.01"), decimals=2)
    assert micros == 10_000 * S + 10_000
    assert both([(T0, micros)]) == (True, True)
    with pytest.raises(money.AmountError, match="2 decimal places"):
        money.decimal_to_micros(Decimal("10000.000001"), decimals=2)


def test_sum_exactly_at_threshold_with_cents_does_not_flag_and_one_cent_more_does():
    base = [(T0, units("3333.33")), (T0 + SEC, units("3333.33")), (T0 + 2 * SEC, units("3333.34"))]
    assert both(base) == (False, False)
    assert both(base + [(T0 + 3 * SEC, units("0.01"))]) == (True, True)


# --- window boundaries ------------------------------------------------------------------


def test_window_start_is_exclusive():
    # a deposit exactly `window` before another is outside the later one's window
    assert both([(T0, units(5000)), (T0 + 120 * SEC, units("5000.01"))]) == (False, False)


def test_window_start_one_microsecond_inside_is_included():
    assert both([(T0, units(5000)), (T0 + 120 * SEC - 1, units("5000.01"))]) == (True, True)


def test_window_end_is_inclusive_equal_timestamps_count_together():
    assert both([(T0, units(5000)), (T0, units("5000.01"))]) == (True, True)
    assert both([(T0, units(5000)), (T0, units(5000))]) == (False, False)


def test_many_equal_timestamps():
    deposits = [(T0, units(1000))] * 10
    assert both(deposits) == (False, False)
    assert both(deposits + [(T0, 1)]) == (True, True)


def test_window_is_anchored_on_deposits_not_on_arbitrary_instants():
    # 4,000 at 0 s, 4,000 at 100 s, 4,000 at 200 s: any 120 s *interval* covering two of
    # them sums 8,000, and no deposit's window holds all three.
    deposits = [(T0 + i * 100 * SEC, units(4000)) for i in range(3)]
    assert both(deposits) == (False, False)


def test_oracle_directly_on_design_examples():
    assert flagged_by_definition([(0, units(6000)), (1, units(6000))], RULE)
    assert not flagged_by_definition([(0, units(6000)), (120 * SEC, units(6000))], RULE)
    assert not flagged_by_definition([(0, units(10_000))], RULE)
    assert flagged_by_definition([(0, units(10_000) + 1)], RULE)
    assert not flagged_by_definition([], RULE)


# --- return value, stickiness -----------------------------------------------------------


def test_add_returns_true_exactly_once_when_the_flag_is_raised():
    deposits = [(T0, units(6000)), (T0 + SEC, units(6000)), (T0 + 2 * SEC, units(6000)), (T0 + 3 * SEC, units(20_000))]
    state, returns = replay(deposits)
    assert returns == [False, True, False, False]
    assert state.flagged


def test_flag_is_sticky_after_the_window_has_passed():
    state, _ = replay([(T0, units(6000)), (T0 + SEC, units(6000))])
    assert state.flagged
    for i in range(1, 20):
        assert state.add(Entry(at=T0 + i * 1000 * SEC, offset=100 + i, amount=1), RULE) is False
        assert state.flagged


def test_flagged_state_shrinks_to_the_newest_entry():
    state, _ = replay([(T0 + i * SEC, units(3000)) for i in range(4)])
    assert state.flagged
    assert len(state.entries) == 1
    assert state.entries[0].at == T0 + 3 * SEC
    # a newer deposit replaces it, with its own amount as cumulative
    state.add(Entry(at=T0 + 500 * SEC, offset=10, amount=units(7)), RULE)
    assert [(e.at, e.offset, e.amount, e.cumulative) for e in state.entries] == [
        (T0 + 500 * SEC, 10, units(7), units(7))
    ]
    # an older one does not
    state.add(Entry(at=T0 + 400 * SEC, offset=11, amount=units(8)), RULE)
    assert [(e.at, e.offset) for e in state.entries] == [(T0 + 500 * SEC, 10)]
    # equal time, higher offset: newer by (time, offset)
    state.add(Entry(at=T0 + 500 * SEC, offset=12, amount=units(9)), RULE)
    assert [(e.at, e.offset) for e in state.entries] == [(T0 + 500 * SEC, 12)]


def test_flagged_when_the_trigger_arrives_out_of_order_keeps_the_newest():
    state, returns = replay([(T0 + 50 * SEC, units(6000)), (T0, units(6000))])
    assert returns == [False, True]
    assert [e.at for e in state.entries] == [T0 + 50 * SEC]


# --- configurable threshold and window -------------------------------------------------


def test_configurable_threshold_and_window():
    rule = Rule(threshold=100 * S, window=10 * SEC, lateness=5 * SEC)
    assert both([(T0, units(60)), (T0 + 10 * SEC - 1, units(41))], rule) == (True, True)
    assert both([(T0, units(60)), (T0 + 10 * SEC, units(41))], rule) == (False, False)
    assert both([(T0, units(100))], rule) == (False, False)
    assert both([(T0, units(100) + 1)], rule) == (True, True)
    # the default rule would not flag the first pair
    assert both([(T0, units(60)), (T0 + 10 * SEC - 1, units(41))]) == (False, False)


def test_larger_window_catches_what_the_default_misses():
    rule = Rule(window=600 * SEC)
    deposits = [(T0, units(6000)), (T0 + 300 * SEC, units(6000))]
    assert both(deposits, rule) == (True, True)
    assert both(deposits) == (False, False)


def test_zero_threshold_flags_any_deposit():
    rule = Rule(threshold=0)
    assert both([(T0, 1)], rule) == (True, True)


# --- cumulative values kept in the state -------------------------------------------------


def window_sum(deposits: list[tuple[int, int]], at: int, rule: Rule = RULE) -> int:
    return sum(a for t, a in deposits if at - rule.window < t <= at)


def test_cumulative_of_each_entry_is_the_sum_of_its_window():
    deposits = [
        (T0, units(1000)),
        (T0 + 60 * SEC, units(2000)),
        (T0 + 119 * SEC, units(3000)),
        (T0 + 120 * SEC, units(100)),
        (T0 + 179 * SEC, units(10)),
        (T0 + 30 * SEC, units(1)),
    ]
    state, _ = replay(deposits)
    assert not state.flagged
    for e in state.entries:
        assert e.cumulative == window_sum(deposits, e.at), e


def test_cumulative_with_equal_timestamps_counts_each_once():
    deposits = [(T0, units(1)), (T0, units(2)), (T0 + SEC, units(4)), (T0, units(8))]
    state, _ = replay(deposits)
    assert [(e.at, e.cumulative) for e in state.entries] == [
        (T0, units(11)),
        (T0, units(11)),
        (T0, units(11)),
        (T0 + SEC, units(15)),
    ]


# --- out-of-order arrival: randomized comparison with the oracle --------------------------

#: Amounts as fractions of the threshold (10,000 for the default rule): exact halves,
#: fifths and thirds make "exactly at the threshold" sums frequent.
FRACTIONS = [
    Decimal(x)
    for x in (
        "0.000001",
        "0.05",
        "0.1",
        "0.199999",
        "0.2",
        "0.25",
        "0.3",
        "0.4",
        "0.5",
        "0.500001",
        "0.6",
        "0.999999",
        "1",
    )
]


def arrival_order(rng: random.Random, deposits: list[tuple[int, int]], lateness: int) -> list[tuple[int, int]]:
    """A permutation in which each deposit arrives at most ``lateness`` behind the newest
    already arrived: sort by time + jitter, jitter in [0, lateness] (both ends reachable)."""
    keyed = []
    for d in deposits:
        jitter = rng.choice([0, lateness, rng.randint(0, lateness)])
        keyed.append((d[0] + jitter, rng.random(), d))
    keyed.sort()
    return [d for _, _, d in keyed]


def random_deposits(rng: random.Random, rule: Rule) -> list[tuple[int, int]]:
    n = rng.randint(1, 12)
    # a coarse grid makes exact window / lateness boundaries frequent; fine times in between
    grid = rng.choice([10 * SEC, 20 * SEC, 30 * SEC, rule.window // 4, 1])
    span = rng.choice([rule.window, 3 * rule.window, 8 * rule.window])
    out = []
    for _ in range(n):
        at = T0 + (rng.randrange(0, span // grid + 1) * grid if grid > 1 else rng.randrange(0, span))
        out.append((at, int(rule.threshold * rng.choice(FRACTIONS))))
    return out


def assert_matches_oracle_on_every_prefix(order: list[tuple[int, int]], rule: Rule) -> bool:
    state = WindowState()
    raised_at = None
    for i, (at, amount) in enumerate(order):
        now = state.add(Entry(at=at, offset=i, amount=amount), rule)
        prefix = order[: i + 1]
        expected = flagged_by_definition(sorted(prefix), rule)
        assert state.flagged == expected, (order, i)
        if now:
            assert raised_at is None, "add() returned True twice"
            raised_at = i
        if not state.flagged:
            # every kept entry's cumulative is exact, and nothing needed was pruned
            newest = max(t for t, _ in prefix)
            for e in state.entries:
                assert e.cumulative == window_sum(prefix, e.at, rule), (order, i, e)
                assert e.at > newest - rule.window - rule.lateness
            assert len(state.entries) == sum(1 for t, _ in prefix if t > newest - rule.window - rule.lateness)
    assert (raised_at is not None) == state.flagged
    return state.flagged


@pytest.mark.parametrize("seed", [1, 7, 42, 2024, 99991])
@pytest.mark.parametrize(
    "rule",
    [
        RULE,
        Rule(threshold=10_000 * S, window=120 * SEC, lateness=0),
        Rule(threshold=7_000 * S, window=30 * SEC, lateness=45 * SEC),
    ],
    ids=["default", "no-lateness", "short-window"],
)
def test_out_of_order_within_lateness_matches_oracle(seed, rule):
    rng = random.Random(seed)
    outcomes = {True: 0, False: 0}
    for _ in range(120):
        deposits = random_deposits(rng, rule)
        expected = flagged_by_definition(sorted(deposits), rule)
        # in time order every add() takes the append fast path; shuffled ones mix both paths
        assert assert_matches_oracle_on_every_prefix(sorted(deposits), rule) == expected
        for _ in range(4):
            order = arrival_order(rng, deposits, rule.lateness)
            assert assert_matches_oracle_on_every_prefix(order, rule) == expected
        outcomes[expected] += 1
    # the generator must exercise both answers, or the comparison says little
    assert outcomes[True] >= 20 and outcomes[False] >= 20, outcomes


def test_arrival_order_helper_respects_lateness():
    rng = random.Random(3)
    for _ in range(200):
        deposits = random_deposits(rng, RULE)
        order = arrival_order(rng, deposits, RULE.lateness)
        assert sorted(order) == sorted(deposits)
        newest = None
        for at, _ in order:
            if newest is not None:
                assert at >= newest - RULE.lateness
            newest = at if newest is None else max(newest, at)


def test_deposit_exactly_lateness_behind_newest_is_evaluated_exactly():
    rule = RULE  # window 120 s, lateness 60 s
    # newest at 200 s, horizon 20 s: the deposit at 140 s (exactly 60 s behind) has the
    # kept deposit at 21 s in its window (20 s, 140 s]
    order = [(T0 + 21 * SEC, units(5000)), (T0 + 200 * SEC, units(1)), (T0 + 140 * SEC, units("5000.01"))]
    assert both(order, rule) == (True, True)
    # and the one at 20 s (pruned) is outside it: no flag
    order = [(T0 + 20 * SEC, units(5000)), (T0 + 200 * SEC, units(1)), (T0 + 140 * SEC, units("5000.01"))]
    assert both(order, rule) == (False, False)


# --- bounded state ----------------------------------------------------------------------


def test_state_is_bounded_by_window_plus_lateness():
    rule = RULE
    state = WindowState()
    for i in range(2000):
        state.add(Entry(at=T0 + i * SEC, offset=i, amount=units(1)), rule)
        newest = T0 + i * SEC
        assert all(e.at > newest - rule.window - rule.lateness for e in state.entries)
    assert not state.flagged
    assert len(state.entries) == (rule.window + rule.lateness) // SEC
    assert state.entries[0].at == T0 + 1999 * SEC - (rule.window + rule.lateness) + SEC


def test_prune_horizon_is_exclusive():
    rule = Rule(window=100 * SEC, lateness=50 * SEC)
    state, _ = replay([(T0, 1), (T0 + 1, 1), (T0 + 150 * SEC, 1)], rule)
    # horizon = newest - window - lateness = T0: T0 is pruned, T0 + 1 µs is kept
    assert [e.at for e in state.entries] == [T0 + 1, T0 + 150 * SEC]


# --- deposits later than the lateness allowance (module docstring) -----------------------


def test_very_late_deposit_above_threshold_on_its_own_flags():
    state, returns = replay([(T0 + 1000 * SEC, units(1)), (T0, units("10000.01"))])
    assert returns == [False, True]
    assert state.flagged


def test_very_late_small_deposit_alone_does_not_flag_and_is_not_kept():
    state, returns = replay([(T0 + 1000 * SEC, units(1)), (T0, units(9000))])
    assert returns == [False, False]
    assert not state.flagged
    assert [e.at for e in state.entries] == [T0 + 1000 * SEC]


def test_late_deposit_just_inside_the_horizon_is_evaluated_against_what_is_kept():
    # newest at 280 s: horizon 100 s. A deposit at 100 s + 1 µs is inserted and
    # counted in the window of the kept deposit at 101 s: 9,000 + 2,000 > 10,000.
    order = [(T0 + 101 * SEC, units(9000)), (T0 + 280 * SEC, units("0.01")), (T0 + 100 * SEC + 1, units(2000))]
    state, returns = replay(order)
    assert returns == [False, False, True]


def test_late_deposit_at_the_horizon_is_evaluated_against_what_is_kept():
    # Same as above but the late deposit is at exactly 100 s = horizon. The kept deposit
    # at 101 s has it in its window (-19 s, 101 s]: 9,000 + 2,000 > 10,000.
    order = [(T0 + 101 * SEC, units(9000)), (T0 + 280 * SEC, units("0.01")), (T0 + 100 * SEC, units(2000))]
    assert flagged_by_definition(sorted(order), RULE)
    state, _ = replay(order)
    assert state.flagged

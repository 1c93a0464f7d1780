"""The above_threshold table codec (wallet_above_threshold.processor.WindowStateCodec)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import protowire as pw  # noqa: E402

from wallet_above_threshold.processor import WINDOW_STATE, WindowStateCodec  # noqa: E402
from wallet_above_threshold.threshold import MICROS, Entry, Rule, WindowState  # noqa: E402
from walletkit.stream.errors import SkipRecord  # noqa: E402
from walletkit.wallet import money  # noqa: E402
from walletkit.wallet.codecs import WALLET_INFO_LIST, wallet_flagged  # noqa: E402

S = money.SCALE
T0 = 1_700_000_000 * MICROS


def as_tuple(state: WindowState):
    return (
        state.wallet_id,
        state.flagged,
        state.applied_offset,
        [(e.at, e.offset, e.amount, e.cumulative) for e in state.entries],
    )


def sample_state(flagged: bool = False) -> WindowState:
    state = WindowState(wallet_id="walletID001", applied_offset=41)
    rule = Rule()
    for i, (dt, amount) in enumerate([(0, 100_000), (30_500_000, 6000 * S), (30_500_000, 1), (119_999_999, 3999 * S)]):
        state.add(Entry(at=T0 + dt, offset=10 + i, amount=amount), rule)
    assert not state.flagged
    if flagged:
        state.add(Entry(at=T0 + 120 * MICROS, offset=20, amount=5000 * S), rule)
        assert state.flagged
    return state


@pytest.mark.parametrize("flagged", [False, True])
def test_round_trip(flagged):
    state = sample_state(flagged)
    decoded = WINDOW_STATE.decode(WINDOW_STATE.encode(state))
    assert as_tuple(decoded) == as_tuple(state)
    assert decoded.entries == state.entries  # (at, offset) order


def test_round_trip_without_applied_offset_and_with_offset_zero():
    for applied in (-1, 0):
        state = WindowState(
            entries=[Entry(at=T0, offset=0, amount=1, cumulative=1)], applied_offset=applied, wallet_id="w"
        )
        assert WINDOW_STATE.decode(WINDOW_STATE.encode(state)).applied_offset == applied


def test_round_trip_keeps_sub_second_times_and_exact_amounts():
    state = WindowState(entries=[Entry(at=T0 + 999_999, offset=3, amount=300_000, cumulative=300_001)], wallet_id="w")
    decoded = WINDOW_STATE.decode(WINDOW_STATE.encode(state))
    e = decoded.entries[0]
    assert (e.at, e.offset, e.amount, e.cumulative) == (T0 + 999_999, 3, 300_000, 300_001)


def test_decoded_entries_are_sorted_by_time_then_offset():
    state = WindowState(
        entries=[
            Entry(at=T0 + 5, offset=1, amount=1),
            Entry(at=T0, offset=9, amount=1),
            Entry(at=T0, offset=2, amount=1),
        ],
        wallet_id="w",
    )
    decoded = WINDOW_STATE.decode(WINDOW_STATE.encode(state))
    assert [(e.at, e.offset) for e in decoded.entries] == [(T0, 2), (T0, 9), (T0 + 5, 1)]


def test_decoded_state_continues_exactly_like_the_original():
    rule = Rule()
    state = sample_state()
    decoded = WINDOW_STATE.decode(WINDOW_STATE.encode(state))
    # 0.9 at 60 s lifts the window of the deposit at 119.999999 s from 9999.100001 to
    # 10000.000001: only a decoded state with exact cumulative values sees it
    assert state.entries[-1].cumulative == 9999 * S + 100_001
    for s in (state, decoded):
        assert s.add(Entry(at=T0 + 60 * MICROS, offset=30, amount=900_000), rule) is True
    assert as_tuple(decoded) == as_tuple(state)


@pytest.mark.parametrize("flagged", [False, True])
def test_every_wallet_info_carries_the_sticky_flag_and_reference_fields(flagged):
    state = sample_state()
    if flagged:
        state.flagged = True  # flag raised earlier; entries still present
    data = WINDOW_STATE.encode(state)
    view = pw.reference_view(data, pw.WALLET_INFO_LIST)
    assert len(view["List"]) == len(state.entries) >= 2
    for info, e in zip(view["List"], state.entries):
        assert info["AboveThreshold"] is flagged
        assert info["WalletID"] == "walletID001"
        assert info["LastDepositAmount"] == e.amount / S
        assert info["RollingPeriodCumulative"] == e.cumulative / S
        assert info["CreatedAt"] == e.at // MICROS
    # readers of the generated class agree
    assert wallet_flagged(WALLET_INFO_LIST.decode(data)) is flagged


def test_flagged_state_after_compaction_still_says_flagged_to_a_reference_reader():
    state = sample_state(flagged=True)
    assert len(state.entries) == 1
    view = pw.reference_view(WINDOW_STATE.encode(state), pw.WALLET_INFO_LIST)
    assert [i["AboveThreshold"] for i in view["List"]] == [True]


def test_reference_doubles_are_the_nearest_doubles():
    state = WindowState(entries=[Entry(at=T0, offset=0, amount=100_000, cumulative=300_000)], wallet_id="w")
    info = pw.reference_view(WINDOW_STATE.encode(state), pw.WALLET_INFO_LIST)["List"][0]
    assert info["LastDepositAmount"] == 0.1
    assert info["RollingPeriodCumulative"] == 0.3


def test_table_codec_stamp_and_applied_offset():
    codec = WindowStateCodec()
    state = WindowState()
    assert codec.applied_offset(state) == -1
    codec.stamp(state, 77)
    assert codec.applied_offset(state) == 77
    assert codec.applied_offset(codec.decode(codec.encode(state))) == 77


def test_decode_go_style_list():
    data = pw.go_wallet_info_list(
        pw.go_wallet_info("walletID001", 6000.0, 6000.0, False, 1_700_000_100),
        pw.go_wallet_info("walletID001", 0.1, 6000.1, False, 1_700_000_000),
    )
    state = WINDOW_STATE.decode(data)
    assert state.wallet_id == "walletID001"
    assert state.flagged is False
    assert state.applied_offset == -1
    assert [(e.at, e.offset, e.amount) for e in state.entries] == [
        (1_700_000_000 * MICROS, -1, 100_000),
        (1_700_000_100 * MICROS, -1, 6000 * S),
    ]


def test_decode_go_style_list_flag_from_any_entry():
    data = pw.go_wallet_info_list(
        pw.go_wallet_info("w", 6000.0, 6000.0, False, 1_700_000_000),
        pw.go_wallet_info("w", 6000.0, 12000.0, True, 1_700_000_010),
        pw.go_wallet_info("w", 1.0, 12001.0, False, 1_700_000_020),
    )
    assert WINDOW_STATE.decode(data).flagged is True


def test_explicit_list_flag_wins_over_entries():
    # our own value: the list-level flag is authoritative
    data = pw.go_wallet_info_list(pw.go_wallet_info("w", 1.0, 1.0, True, 1)) + pw.boolean(3, False)
    assert WINDOW_STATE.decode(data).flagged is False


def test_decode_junk_is_skip_record():
    with pytest.raises(SkipRecord) as info:
        WINDOW_STATE.decode(b"\x0a\x05ab")
    assert info.value.reason == "undecodable"


def test_decode_empty_value_is_an_empty_state():
    state = WINDOW_STATE.decode(b"")
    assert (state.entries, state.flagged, state.applied_offset, state.wallet_id) == ([], False, -1, "")


def test_decode_go_style_list_with_an_amount_past_micro_units_rounds_to_the_nearest_one():
    """The Go service stores float amounts; one with more decimals than micro-units (which our
    API would refuse) is read as the nearest micro-unit, not refused: the window goes on."""
    data = pw.go_wallet_info_list(pw.go_wallet_info("w", 0.1234567, 0.1234567, False, 1_700_000_000))
    state = WINDOW_STATE.decode(data)
    assert [(e.at, e.offset, e.amount) for e in state.entries] == [(1_700_000_000 * MICROS, -1, 123_457)]


def _random_states(seed: int, count: int):
    """States grown deposit by deposit, in and out of time order, some flagged, some with keyed deposits."""
    import random

    from walletkit.wallet.wallet_pb2 import KeyedDeposit

    rng = random.Random(seed)
    rule = Rule(threshold=5000 * S)
    for n in range(count):
        state = WindowState(wallet_id=f"wallet{n:04d}")
        for i in range(rng.randrange(1, 40)):
            at = T0 + rng.randrange(0, 400) * MICROS + rng.choice((0, 1, 999_999))
            state.add(Entry(at=at, offset=i, amount=rng.randrange(1, 900 * S)), rule)
            state.applied_offset = i
            if rng.random() < 0.2:
                state.recent.append(KeyedDeposit(IdempotencyKey=f"k{i}", AmountMicros=i + 1, Offset=i))
            yield state


def test_cached_entry_encodings_give_the_bytes_protobuf_writes():
    """encode() reuses each entry's cached encoding; every state on the way, grown by late and
    early deposits (which change earlier entries' cumulative sums) and flagged (which changes every
    entry's flag), must still encode to exactly what protobuf serializes."""
    checked = flagged = 0
    for state in _random_states(seed=7, count=60):
        assert WINDOW_STATE.encode(state) == WINDOW_STATE.encode_plain(state)
        checked += 1
        flagged += state.flagged
    assert checked > 500 and flagged > 50


def test_cached_entry_encoding_follows_a_changed_entry_and_wallet_id():
    state = sample_state()
    first = WINDOW_STATE.encode(state)
    state.entries[0].cumulative += 1
    assert WINDOW_STATE.encode(state) == WINDOW_STATE.encode_plain(state) != first
    state.wallet_id = "other"
    assert WINDOW_STATE.decode(WINDOW_STATE.encode(state)).wallet_id == "other"


@pytest.mark.parametrize("flagged", [False, True])
def test_applied_offset_of_reads_the_stamp_without_decoding(flagged):
    state = sample_state(flagged)
    data = WINDOW_STATE.encode(state)
    assert WINDOW_STATE.applied_offset_of(data) == WINDOW_STATE.applied_offset(WINDOW_STATE.decode(data)) == 41
    assert WINDOW_STATE.applied_offset_of(WINDOW_STATE.encode(WindowState())) == -1
    with pytest.raises(SkipRecord):
        WINDOW_STATE.applied_offset_of(b"\xff\xff\xff")

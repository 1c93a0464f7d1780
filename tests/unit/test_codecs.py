"""Wallet codecs (walletkit.wallet.codecs) and wire compatibility with the Go reference.

Reference messages are built from raw wire bytes with the field numbers and types of
DESIGN.md ("Protobuf"), by an encoder that does not use the generated classes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import protowire as pw  # noqa: E402

from walletkit.stream.errors import SkipRecord  # noqa: E402
from walletkit.wallet import money  # noqa: E402
from walletkit.wallet.codecs import (  # noqa: E402
    DEPOSIT,
    WALLET,
    WALLET_INFO_LIST,
    DepositRequest,
    Wallet,
    WalletInfo,
    WalletInfoList,
    deposit_amount_micros,
    deposit_time_micros,
    wallet_balance_micros,
    wallet_flagged,
)

S = money.SCALE
NOW = 1_700_000_000


# --- the hand-written encoder itself (known protobuf encodings) ---------------------------


def test_protowire_known_encodings():
    assert pw.varint(1) == b"\x01"
    assert pw.varint(150) == b"\x96\x01"  # the protobuf documentation's example
    assert pw.varint(300) == b"\xac\x02"
    assert pw.varint(-1) == b"\xff" * 9 + b"\x01"
    assert pw.int64(1, 150) == b"\x08\x96\x01"
    assert pw.string(2, "testing") == b"\x12\x07testing"
    assert pw.double(2, 1.0) == b"\x11" + b"\x00" * 6 + b"\xf0\x3f"
    assert pw.parse(b"\x08\x96\x01\x12\x07testing") == [(1, 0, 150), (2, 2, b"testing")]


# --- Go-written deposits ------------------------------------------------------------------


def test_go_deposit_decodes_and_reads_amount_as_shortest_decimal():
    dep = DEPOSIT.decode(pw.go_deposit("walletID001", 0.1, NOW))
    assert isinstance(dep, DepositRequest)
    assert dep.WalletID == "walletID001"
    assert dep.Amount == 0.1
    assert dep.CreatedAt == NOW
    assert not dep.HasField("AmountMicros")
    assert not dep.HasField("CreatedAtMicros")
    assert not dep.HasField("DepositID")
    assert deposit_amount_micros(dep) == 100_000
    assert deposit_time_micros(dep) == NOW * 1_000_000


@pytest.mark.parametrize(
    "amount, micros",
    [
        (8000.0, 8000 * S),
        (0.3, 300_000),
        (123456.78, 123_456_780_000),
        (1e-6, 1),
        (1e9, 1_000_000_000 * S),
    ],
)
def test_go_deposit_amounts(amount, micros):
    assert deposit_amount_micros(DEPOSIT.decode(pw.go_deposit("w", amount, NOW))) == micros


def test_go_deposit_fields_in_any_order_and_with_unknown_fields():
    data = pw.int64(3, NOW) + pw.string(99, "future") + pw.double(2, 12.5) + pw.string(1, "w")
    dep = DEPOSIT.decode(data)
    assert (dep.WalletID, deposit_amount_micros(dep), deposit_time_micros(dep)) == ("w", 12_500_000, NOW * S)


def test_go_deposit_negative_created_at_is_int64_two_complement():
    dep = DEPOSIT.decode(pw.go_deposit("w", 1.0, -5))
    assert dep.CreatedAt == -5
    assert deposit_time_micros(dep) == -5_000_000


def test_our_deposit_exact_fields_take_precedence():
    dep = DepositRequest(
        WalletID="w",
        Amount=0.30000000000000004,
        CreatedAt=NOW,
        AmountMicros=300_000,
        CreatedAtMicros=NOW * S + 123_456,
        DepositID="d-1",
    )
    dep = DEPOSIT.decode(DEPOSIT.encode(dep))
    assert deposit_amount_micros(dep) == 300_000
    assert deposit_time_micros(dep) == NOW * S + 123_456


def test_created_at_micros_zero_is_present_not_absent():
    dep = DepositRequest(WalletID="w", Amount=1.0, CreatedAt=NOW, CreatedAtMicros=0)
    assert deposit_time_micros(DEPOSIT.decode(DEPOSIT.encode(dep))) == 0


@pytest.mark.parametrize("amount", [0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 0.1234567, 1e9 + 1, 0.1 + 0.2])
def test_invalid_go_amount_is_skipped(amount):
    dep = DEPOSIT.decode(pw.go_deposit("w", amount, NOW))
    with pytest.raises(SkipRecord) as info:
        deposit_amount_micros(dep)
    assert info.value.reason == "invalid_amount"
    assert "Amount" in info.value.detail


def test_missing_amount_is_skipped():
    dep = DEPOSIT.decode(pw.string(1, "w") + pw.int64(3, NOW))
    with pytest.raises(SkipRecord, match="invalid_amount"):
        deposit_amount_micros(dep)


@pytest.mark.parametrize("micros", [0, -1, -S, 1_000_000_000 * S + 1, 2**63 - 1])
def test_invalid_amount_micros_is_skipped_even_with_a_valid_double(micros):
    dep = DepositRequest(WalletID="w", Amount=1.0, CreatedAt=NOW, AmountMicros=micros)
    with pytest.raises(SkipRecord) as info:
        deposit_amount_micros(dep)
    assert info.value.reason == "invalid_amount"
    assert str(micros) in info.value.detail


@pytest.mark.parametrize("micros", [1, 100_000, 1_000_000_000 * S])
def test_amount_micros_limits_inclusive(micros):
    dep = DepositRequest(WalletID="w", Amount=0.0, AmountMicros=micros)
    assert deposit_amount_micros(dep) == micros


def test_undecodable_deposit_is_skipped():
    for junk in (b"\xff", b"\x12\x05ab", b"\x0a", None):
        with pytest.raises(SkipRecord) as info:
            DEPOSIT.decode(junk)
        assert info.value.reason == "undecodable"
        assert "DepositRequest" in info.value.detail


def test_our_deposit_read_by_a_reference_reader():
    dep = DepositRequest(
        WalletID="walletID001",
        Amount=0.1,
        CreatedAt=NOW,
        AmountMicros=100_000,
        DepositID="abc",
        CreatedAtMicros=NOW * S + 5,
    )
    view = pw.reference_view(DEPOSIT.encode(dep), pw.DEPOSIT_REQUEST)
    assert view == {"WalletID": "walletID001", "Amount": 0.1, "CreatedAt": NOW}


def test_our_deposit_extensions_use_new_field_numbers_only():
    dep = DepositRequest(
        WalletID="w", Amount=2.5, CreatedAt=NOW, AmountMicros=2_500_000, DepositID="abc", CreatedAtMicros=NOW * S
    )
    fields = pw.parse(DEPOSIT.encode(dep))
    reference = [(f, t) for f, t, _ in fields if f <= 3]
    assert reference == [(1, pw.LEN), (2, pw.FIXED64), (3, pw.VARINT)]
    assert {f for f, _, _ in fields} - {1, 2, 3} == {4, 5, 6}


# --- balance-table values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "balance, micros",
    [
        (8000.0, 8000 * S),
        (0.1, 100_000),
        (1.5, 1_500_000),
        (0.0, 0),
        (9_000_000_000_000.5, 9_000_000_000_000_500_000),  # above the single-deposit maximum
    ],
)
def test_go_wallet_balance(balance, micros):
    w = WALLET.decode(pw.go_wallet("w", balance))
    assert not w.HasField("BalanceMicros")
    assert WALLET.applied_offset(w) == -1
    assert wallet_balance_micros(w) == micros


def test_go_wallet_balance_that_is_a_float_sum():
    w = WALLET.decode(pw.go_wallet("w", 0.1 + 0.2))
    assert wallet_balance_micros(w) == 300_000


def test_balance_micros_takes_precedence_over_the_double():
    w = Wallet(WalletID="w", Balance=0.30000000000000004, BalanceMicros=300_000)
    assert wallet_balance_micros(WALLET.decode(WALLET.encode(w))) == 300_000
    w = Wallet(WalletID="w", Balance=5.0, BalanceMicros=0)
    assert wallet_balance_micros(w) == 0


def test_our_wallet_read_by_a_reference_reader():
    w = Wallet(WalletID="walletID001", Balance=money.micros_to_float(1_000_000), BalanceMicros=1_000_000)
    WALLET.stamp(w, 41)
    view = pw.reference_view(WALLET.encode(w), pw.WALLET)
    assert view == {"WalletID": "walletID001", "Balance": 1.0}
    fields = pw.parse(WALLET.encode(w))
    assert [(f, t) for f, t, _ in fields if f <= 2] == [(1, pw.LEN), (2, pw.FIXED64)]


# --- ProtobufTableCodec -----------------------------------------------------------------


def test_applied_offset_is_minus_one_when_absent():
    assert WALLET.applied_offset(Wallet()) == -1
    assert WALLET.applied_offset(WALLET.decode(pw.go_wallet("w", 1.0))) == -1
    assert WALLET_INFO_LIST.applied_offset(WalletInfoList()) == -1


@pytest.mark.parametrize("offset", [0, 1, 12345, 2**62])
def test_stamp_round_trips_including_offset_zero(offset):
    w = Wallet(WalletID="w", Balance=1.0)
    WALLET.stamp(w, offset)
    assert WALLET.applied_offset(w) == offset
    assert WALLET.applied_offset(WALLET.decode(WALLET.encode(w))) == offset
    info = WalletInfoList()
    WALLET_INFO_LIST.stamp(info, offset)
    assert WALLET_INFO_LIST.applied_offset(WALLET_INFO_LIST.decode(WALLET_INFO_LIST.encode(info))) == offset


def test_stamp_overwrites():
    w = Wallet()
    WALLET.stamp(w, 5)
    WALLET.stamp(w, 3)
    assert WALLET.applied_offset(w) == 3


def test_table_codec_decode_rejects_junk_with_skip_record():
    with pytest.raises(SkipRecord, match="undecodable"):
        WALLET.decode(b"\xff\xff")


# --- above_threshold-table values -------------------------------------------------------


def test_wallet_flagged_from_go_list():
    flagged = WALLET_INFO_LIST.decode(
        pw.go_wallet_info_list(
            pw.go_wallet_info("w", 6000.0, 6000.0, False, NOW), pw.go_wallet_info("w", 6000.0, 12000.0, True, NOW + 1)
        )
    )
    assert not flagged.HasField("AboveThreshold")
    assert wallet_flagged(flagged) is True
    not_flagged = WALLET_INFO_LIST.decode(pw.go_wallet_info_list(pw.go_wallet_info("w", 1.0, 1.0, False, NOW)))
    assert wallet_flagged(not_flagged) is False
    assert wallet_flagged(WALLET_INFO_LIST.decode(b"")) is False


def test_wallet_flagged_explicit_field_wins():
    info = WalletInfoList(List=[WalletInfo(WalletID="w", AboveThreshold=True)], AboveThreshold=False)
    assert wallet_flagged(info) is False
    info = WalletInfoList(AboveThreshold=True)
    assert wallet_flagged(WALLET_INFO_LIST.decode(WALLET_INFO_LIST.encode(info))) is True


def test_go_wallet_info_list_decodes_with_reference_fields():
    data = pw.go_wallet_info_list(pw.go_wallet_info("walletID001", 2.5, 7.5, True, NOW))
    msg = WALLET_INFO_LIST.decode(data)
    assert len(msg.List) == 1
    i = msg.List[0]
    assert (i.WalletID, i.LastDepositAmount, i.RollingPeriodCumulative, i.AboveThreshold, i.CreatedAt) == (
        "walletID001",
        2.5,
        7.5,
        True,
        NOW,
    )
    assert not i.HasField("LastDepositMicros")
    assert not i.HasField("CreatedAtMicros")


def test_our_wallet_info_list_read_by_a_reference_reader():
    msg = WalletInfoList(
        List=[
            WalletInfo(
                WalletID="w",
                LastDepositAmount=6000.0,
                RollingPeriodCumulative=12000.0,
                AboveThreshold=True,
                CreatedAt=NOW,
                LastDepositMicros=6000 * S,
                RollingPeriodCumulativeMicros=12000 * S,
                CreatedAtMicros=NOW * S + 7,
                DepositOffset=3,
            )
        ],
        AppliedOffset=3,
        AboveThreshold=True,
    )
    view = pw.reference_view(WALLET_INFO_LIST.encode(msg), pw.WALLET_INFO_LIST)
    assert view == {
        "List": [
            {
                "WalletID": "w",
                "LastDepositAmount": 6000.0,
                "RollingPeriodCumulative": 12000.0,
                "AboveThreshold": True,
                "CreatedAt": NOW,
            }
        ]
    }

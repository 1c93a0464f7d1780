"""A tiny, independent protobuf wire encoder/decoder for compatibility tests.

It knows nothing of the generated classes: messages are built from field numbers and
wire types exactly as DESIGN.md fixes them for the Go reference, and our encodings are
read back the same way (as a reader that knows only the reference fields would).
"""

from __future__ import annotations

import struct

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 are 10-byte two's complement varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def string(field: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return tag(field, LEN) + varint(len(data)) + data


def double(field: int, value: float) -> bytes:
    return tag(field, FIXED64) + struct.pack("<d", value)


def int64(field: int, value: int) -> bytes:
    return tag(field, VARINT) + varint(value)


def boolean(field: int, value: bool) -> bytes:
    return tag(field, VARINT) + varint(int(value))


message = string  # an embedded message is length-delimited bytes


def parse(data: bytes) -> list[tuple[int, int, object]]:
    """Every (field, wire type, raw value) of ``data``, in order. Raw values: int for
    varints (unsigned 64-bit), bytes for fixed64/fixed32/length-delimited."""
    out = []
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        field, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, i = _read_varint(data, i)
        elif wire_type == FIXED64:
            value, i = data[i : i + 8], i + 8
        elif wire_type == FIXED32:
            value, i = data[i : i + 4], i + 4
        elif wire_type == LEN:
            n, i = _read_varint(data, i)
            value, i = data[i : i + n], i + n
        else:
            raise ValueError(f"wire type {wire_type}")
        if i > len(data):
            raise ValueError("truncated")
        out.append((field, wire_type, value))
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def as_int64(raw: int) -> int:
    return raw - (1 << 64) if raw >= 1 << 63 else raw


def as_double(raw: bytes) -> float:
    return struct.unpack("<d", raw)[0]


def reference_view(data: bytes, schema: dict[int, tuple[str, str]]) -> dict[str, object]:
    """Read ``data`` as a proto3 reader that knows only ``schema`` ({field: (name, type)},
    type one of string/double/int64/bool/repeated:<callable>). Unknown fields are skipped;
    absent scalars have their proto3 defaults; the wire type must match the type."""
    defaults = {"string": "", "double": 0.0, "int64": 0, "bool": False}
    out: dict[str, object] = {}
    for name, kind in schema.values():
        out[name] = [] if not isinstance(kind, str) else defaults[kind]
    for field, wire_type, raw in parse(data):
        if field not in schema:
            continue
        name, kind = schema[field]
        if kind == "string":
            assert wire_type == LEN, (name, wire_type)
            out[name] = raw.decode()
        elif kind == "double":
            assert wire_type == FIXED64, (name, wire_type)
            out[name] = as_double(raw)
        elif kind == "int64":
            assert wire_type == VARINT, (name, wire_type)
            out[name] = as_int64(raw)
        elif kind == "bool":
            assert wire_type == VARINT, (name, wire_type)
            out[name] = bool(raw)
        else:  # repeated embedded message
            assert wire_type == LEN, (name, wire_type)
            out[name].append(kind(raw))
    return out


DEPOSIT_REQUEST = {1: ("WalletID", "string"), 2: ("Amount", "double"), 3: ("CreatedAt", "int64")}
WALLET = {1: ("WalletID", "string"), 2: ("Balance", "double")}
WALLET_INFO = {
    1: ("WalletID", "string"),
    2: ("LastDepositAmount", "double"),
    3: ("RollingPeriodCumulative", "double"),
    4: ("AboveThreshold", "bool"),
    5: ("CreatedAt", "int64"),
}
WALLET_INFO_LIST = {1: ("List", lambda raw: reference_view(raw, WALLET_INFO))}


def go_deposit(wallet_id: str, amount: float, created_at: int) -> bytes:
    """A DepositRequest as the Go emitter writes it (proto3: zero values omitted)."""
    out = b""
    if wallet_id:
        out += string(1, wallet_id)
    if amount != 0 or str(amount) == "-0.0":
        out += double(2, amount)
    if created_at:
        out += int64(3, created_at)
    return out


def go_wallet(wallet_id: str, balance: float) -> bytes:
    return (string(1, wallet_id) if wallet_id else b"") + (double(2, balance) if balance else b"")


def go_wallet_info(wallet_id: str, last: float, cumulative: float, above: bool, created_at: int) -> bytes:
    out = string(1, wallet_id) + double(2, last)
    if cumulative:
        out += double(3, cumulative)
    if above:
        out += boolean(4, True)
    if created_at:
        out += int64(5, created_at)
    return out


def go_wallet_info_list(*infos: bytes) -> bytes:
    return b"".join(message(1, i) for i in infos)

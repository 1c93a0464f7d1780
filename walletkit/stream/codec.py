"""Codecs: how values become bytes on a topic and back (Goka's Codec)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol


class Codec(Protocol):
    """Encodes and decodes the values of one topic."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any:
        """Decode ``data``; raise :class:`~walletkit.stream.errors.SkipRecord` if malformed."""
        ...


class TableCodec(Codec, Protocol):
    """A codec for table values, which carry the input offset they reflect.

    The processor stamps every value it writes with the offset of the input record
    that produced it; a record whose offset is at or below the stored value's is
    already counted and is skipped. Restores and views keep, per key, the value
    with the highest applied offset.
    """

    def applied_offset(self, value: Any) -> int:
        """The stamped input offset, or -1 when the value carries none."""
        ...

    def stamp(self, value: Any, offset: int) -> None:
        """Record in ``value`` that it reflects the input record at ``offset``."""
        ...


def raw_applied_offset(codec: TableCodec) -> Callable[[bytes], int]:
    """``data -> applied offset`` for restores and views, which need only that field.

    A codec may provide ``applied_offset_of(data)`` to read it without building the
    whole value; otherwise the value is decoded.
    """
    fast = getattr(codec, "applied_offset_of", None)
    if fast is not None:
        return fast
    decode, applied = codec.decode, codec.applied_offset
    return lambda data: applied(decode(data))


def encoded_size(codec: Codec) -> Callable[[Any], int]:
    """``value -> size of its encoding``, for the table's value-size limit.

    A codec may provide ``encoded_size(value)`` that is cheaper than encoding (an upper
    bound is fine); otherwise the value is encoded.
    """
    fast = getattr(codec, "encoded_size", None)
    if fast is not None:
        return fast
    encode = codec.encode
    return lambda value: len(encode(value))


def parse_message(message_type: type, data: bytes) -> Any:
    """``data`` parsed as a ``message_type``; SkipRecord if it is not one."""
    msg = message_type()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # DecodeError, or None/garbage input
        from walletkit.stream.errors import SkipRecord

        raise SkipRecord("undecodable", f"not a {message_type.__name__}: {exc}") from exc
    return msg


class ProtobufCodec:
    """Codec for one protobuf message type."""

    def __init__(self, message_type: type) -> None:
        self.message_type = message_type

    def encode(self, value: Any) -> bytes:
        return value.SerializeToString()

    def decode(self, data: bytes) -> Any:
        return parse_message(self.message_type, data)

    def encoded_size(self, value: Any) -> int:
        return value.ByteSize()


class ProtobufTableCodec(ProtobufCodec):
    """Table codec for a protobuf message with an ``optional int64`` offset field."""

    def __init__(self, message_type: type, offset_field: str) -> None:
        super().__init__(message_type)
        self.offset_field = offset_field

    def applied_offset(self, value: Any) -> int:
        return getattr(value, self.offset_field) if value.HasField(self.offset_field) else -1

    def applied_offset_of(self, data: bytes) -> int:
        """``applied_offset(decode(data))``, for restores and views."""
        return self.applied_offset(parse_message(self.message_type, data))

    def stamp(self, value: Any, offset: int) -> None:
        setattr(value, self.offset_field, offset)


class JsonCodec:
    """Codec for JSON values (objects, arrays, numbers, strings); undecodable input is skipped."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (TypeError, ValueError) as exc:
            from walletkit.stream.errors import SkipRecord

            raise SkipRecord("undecodable", f"not JSON: {exc}") from exc


class JsonTableCodec(JsonCodec):
    """Table codec for JSON objects; the applied offset is kept in the object under ``offset_field``."""

    def __init__(self, offset_field: str = "_offset") -> None:
        self.offset_field = offset_field

    def applied_offset(self, value: Any) -> int:
        return value.get(self.offset_field, -1) if isinstance(value, dict) else -1

    def stamp(self, value: Any, offset: int) -> None:
        value[self.offset_field] = offset

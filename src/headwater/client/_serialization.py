"""Serializers and deserializers for keys and values, applied identically on every backend.

A serializer is any callable `(value) -> bytes | None`; a deserializer `(bytes | None) -> value`.
The named ones ("bytes", "str", "json", "msgpack") and `struct(SomeType)` cover the usual
cases; None passes through both ways (a null key, a tombstone). The backends call `serialize`
and `deserialize` here, which wrap a failure in an error naming the topic (and, when consuming,
the partition and offset) so one bad payload is an exception a loop can handle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from headwater.errors import ConfigError, DeserializationError, SerializationError

Serializer = Callable[[Any], bytes | None]
Deserializer = Callable[[bytes | None], Any]


def _bytes_out(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected bytes, got {type(value).__name__} (set a serializer)")


def _bytes_in(data: bytes | None) -> bytes | None:
    return data


def _str_out(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value.encode()


def _str_in(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder()


def _json_out(value: Any) -> bytes | None:
    return None if value is None else _json_encoder.encode(value)


def _json_in(data: bytes | None) -> Any:
    return None if data is None else _json_decoder.decode(data)


def _msgpack_out(value: Any) -> bytes | None:
    return None if value is None else _msgpack_encoder.encode(value)


def _msgpack_in(data: bytes | None) -> Any:
    return None if data is None else _msgpack_decoder.decode(data)


def struct(kind: type[Any], *, format: str = "json") -> tuple[Serializer, Deserializer]:
    """A serializer and deserializer for a msgspec Struct or dataclass type, checked on decode.

    `format` is "json" or "msgpack". Use as `value_serializer=s, value_deserializer=d`, or pass
    the type itself as the serializer or deserializer (JSON).
    """
    if format == "json":
        encoder: Any = msgspec.json.Encoder()
        decoder: Any = msgspec.json.Decoder(kind)
    elif format == "msgpack":
        encoder = msgspec.msgpack.Encoder()
        decoder = msgspec.msgpack.Decoder(kind)
    else:
        raise ConfigError(f"struct format must be 'json' or 'msgpack', not {format!r}")

    def out(value: Any) -> bytes | None:
        return None if value is None else bytes(encoder.encode(value))

    def into(data: bytes | None) -> Any:
        return None if data is None else decoder.decode(data)

    return out, into


SERIALIZERS: dict[str, Serializer] = {
    "bytes": _bytes_out,
    "str": _str_out,
    "json": _json_out,
    "msgpack": _msgpack_out,
}
DESERIALIZERS: dict[str, Deserializer] = {
    "bytes": _bytes_in,
    "str": _str_in,
    "json": _json_in,
    "msgpack": _msgpack_in,
}


def resolve_serializer(spec: str | type[Any] | Serializer | None) -> Serializer:
    """A serializer from a name, a Struct/dataclass type, a callable, or None (bytes)."""
    if spec is None:
        return _bytes_out
    if isinstance(spec, str):
        found = SERIALIZERS.get(spec)
        if found is None:
            raise ConfigError(f"unknown serializer {spec!r}; use one of {', '.join(SERIALIZERS)}")
        return found
    if isinstance(spec, type):
        return struct(spec)[0]
    if callable(spec):
        return spec
    raise ConfigError(f"a serializer must be a name or a callable, not {spec!r}")


def resolve_deserializer(spec: str | type[Any] | Deserializer | None) -> Deserializer:
    """A deserializer from a name, a Struct/dataclass type, a callable, or None (bytes)."""
    if spec is None:
        return _bytes_in
    if isinstance(spec, str):
        found = DESERIALIZERS.get(spec)
        if found is None:
            raise ConfigError(
                f"unknown deserializer {spec!r}; use one of {', '.join(DESERIALIZERS)}"
            )
        return found
    if isinstance(spec, type):
        return struct(spec)[1]
    if callable(spec):
        return spec
    raise ConfigError(f"a deserializer must be a name or a callable, not {spec!r}")


def serialize(serializer: Serializer, value: Any, topic: str, what: str) -> bytes | None:
    """`serializer(value)`, failures raised as `SerializationError` naming topic and field."""
    if serializer is _bytes_out and (value is None or type(value) is bytes):
        return value  # the common case, without a call
    try:
        return serializer(value)
    except Exception as error:
        raise SerializationError(
            f"cannot serialize the {what} for topic {topic!r}: {error}"
        ) from error


def deserialize(
    deserializer: Deserializer,
    data: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    what: str,
) -> Any:
    """`deserializer(data)`, failures raised as `DeserializationError` naming the record."""
    if deserializer is _bytes_in:
        return data
    try:
        return deserializer(data)
    except Exception as error:
        raise DeserializationError(
            f"cannot deserialize the {what}: {error}",
            topic=topic,
            partition=partition,
            offset=offset,
        ) from error


def passes_bytes(serializer: Serializer) -> bool:
    """Whether `serializer` sends bytes and None as they are (lets a backend skip the call)."""
    return serializer is _bytes_out


def is_identity(deserializer: Deserializer) -> bool:
    """Whether `deserializer` leaves bytes as they are (lets a backend skip the call)."""
    return deserializer is _bytes_in


__all__ = [
    "DESERIALIZERS",
    "SERIALIZERS",
    "Deserializer",
    "Serializer",
    "deserialize",
    "is_identity",
    "passes_bytes",
    "resolve_deserializer",
    "resolve_serializer",
    "serialize",
    "struct",
]

"""The wire primitives: exact encodings, round trips, and malformed input."""

from __future__ import annotations

import contextlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.errors import HeadwaterError
from headwater.protocol._primitives import MalformedFrameError, Reader, Writer


def written(fn_name: str, *args: object) -> bytes:
    w = Writer()
    getattr(w, fn_name)(*args)
    return w.getvalue()


def test_malformed_frame_error_is_a_headwater_error_with_invalid_request_code() -> None:
    assert issubclass(MalformedFrameError, HeadwaterError)
    assert MalformedFrameError.error_code == 42


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (0xFFFFFFFF, b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_unsigned_varint(value: int, encoded: bytes) -> None:
    assert written("uvarint", value) == encoded
    r = Reader(encoded)
    assert r.uvarint() == value
    assert r.at_end()


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-64, b"\x7f"), (64, b"\x80\x01")],
)
def test_zigzag_varint(value: int, encoded: bytes) -> None:
    assert written("varint", value) == encoded
    assert Reader(encoded).varint() == value
    assert Reader(written("varlong", value)).varlong() == value


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_varint_round_trip(value: int) -> None:
    assert Reader(written("varint", value)).varint() == value


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varlong_round_trip(value: int) -> None:
    assert Reader(written("varlong", value)).varlong() == value


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_uvarint_round_trip(value: int) -> None:
    assert Reader(written("uvarint", value)).uvarint() == value


def test_overlong_varints_are_malformed() -> None:
    with pytest.raises(MalformedFrameError):
        Reader(b"\xff\xff\xff\xff\xff\x01").uvarint()
    with pytest.raises(MalformedFrameError):
        Reader(b"\xff\xff\xff\xff\x7f").uvarint()  # 35 bits
    with pytest.raises(MalformedFrameError):
        Reader(b"\xff" * 10 + b"\x01").varlong()
    with pytest.raises(MalformedFrameError):
        Reader(b"\x80").uvarint()


def test_fixed_width_encodings() -> None:
    assert written("int8", -2) == b"\xfe"
    assert written("int16", -2) == b"\xff\xfe"
    assert written("int32", 1) == b"\x00\x00\x00\x01"
    assert written("int64", -1) == b"\xff" * 8
    assert written("uint16", 65535) == b"\xff\xff"
    assert written("uint32", 2**32 - 1) == b"\xff" * 4
    assert written("float64", 1.5) == struct.pack(">d", 1.5)
    assert written("boolean", True) == b"\x01"
    u = uuid.uuid4()
    assert written("uuid", u) == u.bytes
    r = Reader(b"\xfe\xff\xfe\x00\x00\x00\x01" + b"\xff" * 8 + b"\x02" + u.bytes)
    assert (r.int8(), r.int16(), r.int32(), r.int64(), r.boolean(), r.uuid()) == (
        -2,
        -2,
        1,
        -1,
        True,
        u,
    )
    assert r.at_end()


def test_strings() -> None:
    assert written("string", "hé") == b"\x00\x03h\xc3\xa9"
    assert written("nullable_string", None) == b"\xff\xff"
    assert written("compact_string", "hé") == b"\x04h\xc3\xa9"
    assert written("compact_nullable_string", None) == b"\x00"
    assert written("compact_string", "") == b"\x01"
    assert Reader(b"\x00\x03h\xc3\xa9").string() == "hé"
    assert Reader(b"\xff\xff").nullable_string() is None
    assert Reader(b"\x04h\xc3\xa9").compact_string() == "hé"
    assert Reader(b"\x00").compact_nullable_string() is None
    with pytest.raises(ValueError):
        Writer().string(None)


def test_bytes_and_records() -> None:
    assert written("bytes_", b"ab") == b"\x00\x00\x00\x02ab"
    assert written("nullable_bytes", None) == b"\xff\xff\xff\xff"
    assert written("compact_bytes", b"ab") == b"\x03ab"
    assert written("compact_records", None) == b"\x00"
    data = bytearray(b"\x00\x00\x00\x03xyz")
    records = Reader(data).records()
    assert isinstance(records, memoryview)
    assert records == b"xyz"
    data[4] = ord("X")  # a view, not a copy
    assert records == b"Xyz"
    assert Reader(b"\x04xyz").compact_records() == b"xyz"
    assert Reader(b"\xff\xff\xff\xff").records() is None


def test_large_records_are_kept_by_reference() -> None:
    payload = memoryview(bytes(100_000))
    w = Writer()
    w.int32(7)
    w.compact_records(payload)
    w.int8(1)
    chunks = w.chunks()
    assert any(c is payload for c in chunks)
    assert len(w) == sum(len(c) for c in chunks)
    value = w.getvalue()
    r = Reader(value)
    assert r.int32() == 7
    assert r.compact_records() == payload
    assert r.int8() == 1


def test_primitive_arrays() -> None:
    w = Writer()
    w.compact_array_len([1, 2, 3])
    w.int32_list([1, 2, 3])
    w.nullable_array_len(None)
    r = Reader(w.getvalue())
    assert r.int32_list(r.compact_array_len()) == [1, 2, 3]
    assert r.nullable_array_len() == -1


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("int8", b""),
        ("int16", b"\x00"),
        ("int32", b"\x00\x00\x00"),
        ("int64", b"\x00" * 7),
        ("uuid", b"\x00" * 15),
        ("boolean", b""),
        ("string", b"\x00\x05abc"),  # length past the end
        ("string", b"\xff\xfe"),  # negative length other than -1
        ("string", b"\xff\xff"),  # null in a non-nullable string
        ("nullable_string", b"\xff\xfe"),
        ("string", b"\x00\x02\xc3\x28"),  # bad UTF-8
        ("compact_string", b"\x00"),
        ("compact_string", b"\x05ab"),
        ("bytes_", b"\x7f\xff\xff\xff"),  # a huge length cannot allocate
        ("records", b"\x00\x00\x00\x10ab"),
        ("records", b"\xff\xff\xff\xfe"),
        ("compact_records", b"\xff\xff\xff\xff\x0f"),
        ("array_len", b"\x7f\xff\xff\xff"),
        ("array_len", b"\xff\xff\xff\xff"),  # null in a non-nullable array
        ("nullable_array_len", b"\xff\xff\xff\xf0"),
        ("compact_array_len", b"\x10"),
        ("skip_tagged_fields", b"\x01\x00\x05ab"),
        ("skip_tagged_fields", b"\x05"),
    ],
)
def test_malformed_input(method: str, data: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        getattr(Reader(data), method)()


def test_expect_end() -> None:
    r = Reader(b"\x00\x01")
    r.int8()
    with pytest.raises(MalformedFrameError):
        r.expect_end()
    r.int8()
    r.expect_end()


def test_tagged_fields_unknown_skipped() -> None:
    # two tagged fields (tag 5: 2 bytes, tag 9: 0 bytes), then an int8
    r = Reader(b"\x02\x05\x02ab\x09\x00\x07")
    r.skip_tagged_fields()
    assert r.int8() == 7


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_malformed(data: bytes) -> None:
    for method in (
        "uvarint",
        "varint",
        "varlong",
        "string",
        "nullable_string",
        "compact_string",
        "compact_nullable_string",
        "bytes_",
        "compact_nullable_bytes",
        "records",
        "compact_records",
        "array_len",
        "compact_nullable_array_len",
        "skip_tagged_fields",
        "uuid",
    ):
        with contextlib.suppress(MalformedFrameError):
            getattr(Reader(data), method)()

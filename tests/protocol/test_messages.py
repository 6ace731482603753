"""Generated messages: round trips at every version, golden bytes, malformed input, interop."""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.protocol import headers, messages
from headwater.protocol._primitives import (
    ApiMessage,
    MalformedFrameError,
    Reader,
    Struct,
    UnsupportedVersionError,
    Writer,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    path = REPO_ROOT / "tools" / "generate_protocol.py"
    spec = importlib.util.spec_from_file_location("_hw_generate_protocol", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
MODELS = [
    gen.build_message(gen.load_spec(gen.DEFAULT_SPEC_DIR / f"{api}{kind}.json"), lo, hi)
    for api, lo, hi in gen.APIS
    for kind in ("Request", "Response")
]
CASES = [(m, v) for m in MODELS for v in range(m.lo, m.hi + 1)]
CASE_IDS = [f"{m.name}-v{v}" for m, v in CASES]

_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
}
_ALPHABET = "abcXYZ-_.09 é日\u00fc"


def _scalar(t: str, rnd: random.Random) -> Any:
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return rnd.choice([lo, hi, 0, -1 if lo < 0 else 1, rnd.randint(lo, hi)])
    if t == "float64":
        return rnd.uniform(-1e9, 1e9)
    if t == "bool":
        return rnd.random() < 0.5
    if t == "string":
        return "".join(rnd.choice(_ALPHABET) for _ in range(rnd.randint(0, 12)))
    if t in ("bytes", "records"):
        return rnd.randbytes(rnd.randint(0, 20))
    if t == "uuid":
        return uuid.UUID(int=rnd.getrandbits(128))
    raise AssertionError(t)


def _value(f: Any, v: int, rnd: random.Random) -> Any:
    if v in f.nullable and rnd.random() < 0.25:
        return None
    if f.is_array:
        n = rnd.randint(0, 3)
        if f.struct is not None:
            return [fill(f.struct, v, rnd) for _ in range(n)]
        return [_scalar(f.elem, rnd) for _ in range(n)]
    if f.struct is not None:
        return fill(f.struct, v, rnd)
    return _scalar(f.type, rnd)


def fill(sd: Any, v: int, rnd: random.Random) -> Struct:
    """An instance of the struct with every field valid in version `v` set at random."""
    cls = getattr(messages, sd.cls)
    kwargs = {f.py: _value(f, v, rnd) for f in sd.fields if v in f.versions}
    obj: Struct = cls(**kwargs)
    return obj


def encode(obj: ApiMessage, version: int) -> bytes:
    w = Writer()
    obj.encode(w, version)
    return w.getvalue()


def decode(cls: type[ApiMessage], data: bytes, version: int) -> ApiMessage:
    r = Reader(data)
    obj = cls.decode(r, version)
    r.expect_end()
    return obj


@pytest.mark.parametrize(("model", "version"), CASES, ids=CASE_IDS)
def test_round_trip_every_version(model: Any, version: int) -> None:
    cls = getattr(messages, model.name)
    assert cls.MIN_VERSION <= version <= cls.MAX_VERSION
    rnd = random.Random(f"{model.name}-{version}")
    for _ in range(25):
        obj = fill(model.root, version, rnd)
        data = encode(obj, version)
        back = decode(cls, data, version)
        assert back == obj
        assert encode(back, version) == data
        # every strict prefix is truncated: MalformedFrameError and nothing else
        for cut in sorted({0, len(data) // 2, len(data) - 1}):
            if 0 <= cut < len(data):
                with pytest.raises(MalformedFrameError):
                    decode(cls, data[:cut], version)


def test_default_instances_round_trip() -> None:
    for model, version in CASES:
        cls = getattr(messages, model.name)
        assert decode(cls, encode(cls(), version), version) == cls()


@pytest.mark.parametrize(("model", "version"), CASES, ids=CASE_IDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=128))
def test_random_bytes_only_raise_malformed(model: Any, version: int, data: bytes) -> None:
    cls = getattr(messages, model.name)
    with contextlib.suppress(MalformedFrameError):
        cls.decode(Reader(data), version)


@pytest.mark.parametrize(("model", "version"), CASES[::3], ids=CASE_IDS[::3])
def test_mutated_frames_only_raise_malformed(model: Any, version: int) -> None:
    cls = getattr(messages, model.name)
    rnd = random.Random(f"mutate-{model.name}-{version}")
    for _ in range(10):
        data = bytearray(encode(fill(model.root, version, rnd), version))
        if not data:
            continue
        for _ in range(3):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        with contextlib.suppress(MalformedFrameError):
            cls.decode(Reader(bytes(data)), version)


def test_registry() -> None:
    assert messages.REQUEST_TYPES[0] is messages.ProduceRequest
    assert messages.RESPONSE_TYPES[1] is messages.FetchResponse
    assert messages.API_NAMES[18] == "ApiVersions"
    assert set(messages.REQUEST_TYPES) == set(messages.RESPONSE_TYPES) == set(messages.API_NAMES)
    assert len(messages.REQUEST_TYPES) == len(gen.APIS)
    for key, cls in messages.REQUEST_TYPES.items():
        assert key == cls.API_KEY
        assert messages.RESPONSE_TYPES[key].MIN_VERSION == cls.MIN_VERSION
    assert messages.FetchRequest.MIN_VERSION == 4
    assert messages.FetchRequest.MAX_VERSION == 17
    assert messages.ProduceRequest.MIN_VERSION == 3


# --- golden bytes -----------------------------------------------------------------------------


def test_api_versions_request_v3_golden() -> None:
    req = messages.ApiVersionsRequest(
        client_software_name="kafka-python", client_software_version="2.0"
    )
    expected = b"\x0dkafka-python" + b"\x042.0" + b"\x00"
    assert encode(req, 3) == expected
    assert decode(messages.ApiVersionsRequest, expected, 3) == req
    assert encode(req, 2) == b""  # the fields are ignorable: silently dropped before v3


def test_metadata_request_v12_null_topics_golden() -> None:
    req = messages.MetadataRequest(topics=None)
    # null compact array, allow_auto_topic_creation (default true),
    # include_topic_authorized_operations, empty tagged fields
    expected = b"\x00\x01\x00\x00"
    assert encode(req, 12) == expected
    back = decode(messages.MetadataRequest, expected, 12)
    assert back.topics is None
    assert messages.MetadataRequest().topics == []
    assert encode(messages.MetadataRequest(), 12) == b"\x01\x01\x00\x00"


def test_produce_request_v9_golden() -> None:
    req = messages.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=30000,
        topic_data=[
            messages.ProduceRequestTopicProduceData(
                name="t",
                partition_data=[
                    messages.ProduceRequestPartitionProduceData(index=2, records=b"abc")
                ],
            )
        ],
    )
    expected = (
        b"\x00"  # null transactional id
        + b"\xff\xff"  # acks
        + b"\x00\x00\x75\x30"  # timeout
        + b"\x02"  # one topic
        + b"\x02t"
        + b"\x02"  # one partition
        + b"\x00\x00\x00\x02"
        + b"\x04abc"  # compact records
        + b"\x00\x00\x00"  # partition, topic, request tagged fields
    )
    assert encode(req, 9) == expected
    back = decode(messages.ProduceRequest, expected, 9)
    records = back.topic_data[0].partition_data[0].records
    assert isinstance(records, memoryview)
    assert records == b"abc"


def test_tagged_fields_encoded_and_decoded() -> None:
    resp = messages.ApiVersionsResponse(
        error_code=0,
        api_keys=[messages.ApiVersionsResponseApiVersion(api_key=18, min_version=0, max_version=4)],
        throttle_time_ms=0,
        finalized_features_epoch=5,
    )
    data = encode(resp, 3)
    expected = (
        b"\x00\x00"  # error code
        + b"\x02\x00\x12\x00\x00\x00\x04\x00"  # one api key, its tagged fields
        + b"\x00\x00\x00\x00"  # throttle time
        + b"\x01"  # one tagged field
        + b"\x01\x08"  # tag 1, 8 bytes
        + b"\x00\x00\x00\x00\x00\x00\x00\x05"
    )
    assert data == expected
    assert decode(messages.ApiVersionsResponse, data, 3) == resp
    # an unknown tag (7) is skipped; a known one still decodes
    with_unknown = expected[:-11] + b"\x02\x01\x08" + expected[-8:] + b"\x07\x02zz"
    assert decode(messages.ApiVersionsResponse, with_unknown, 3) == resp


def test_tagged_field_with_wrong_size_is_malformed() -> None:
    data = b"\x00\x00\x01\x00\x00\x00\x00\x01\x01\x09" + b"\x00" * 9
    with pytest.raises(MalformedFrameError):
        decode(messages.ApiVersionsResponse, data, 3)


def test_non_ignorable_field_in_a_version_without_it_raises() -> None:
    resp = messages.FetchResponse(session_id=7)
    with pytest.raises(UnsupportedVersionError):
        encode(resp, 4)
    assert decode(messages.FetchResponse, encode(resp, 7), 7).session_id == 7
    req = messages.MetadataRequest(include_cluster_authorized_operations=True)
    encode(req, 10)
    with pytest.raises(UnsupportedVersionError):
        encode(req, 11)


def test_unsupported_version_raises() -> None:
    with pytest.raises(UnsupportedVersionError):
        encode(messages.ProduceRequest(), 2)
    with pytest.raises(UnsupportedVersionError):
        messages.FetchRequest.decode(Reader(b""), 18)


def test_null_in_non_nullable_field_raises_on_encode() -> None:
    req = messages.MetadataRequest(topics=None)
    with pytest.raises(ValueError):
        encode(req, 0)  # topics became nullable in v1


# --- headers ----------------------------------------------------------------------------------


def test_header_versions() -> None:
    assert headers.request_header_version(18, 3) == 2
    assert headers.request_header_version(18, 2) == 1
    assert headers.request_header_version(0, 9) == 2
    assert headers.request_header_version(0, 8) == 1
    assert headers.request_header_version(7, 0) == 0  # ControlledShutdown v0
    assert headers.response_header_version(18, 3) == 0  # ApiVersions: always v0
    assert headers.response_header_version(1, 12) == 1
    assert headers.response_header_version(1, 11) == 0
    assert headers.request_header_version(47, 0) == 1  # OffsetDelete: never flexible


def test_request_header_round_trip_and_golden() -> None:
    w = Writer()
    headers.encode_request_header(w, 18, 3, 1, "cli")
    data = w.getvalue()
    assert data == b"\x00\x12\x00\x03\x00\x00\x00\x01\x00\x03cli\x00"
    r = Reader(data + b"body")
    assert headers.decode_request_header(r) == headers.RequestHeader(18, 3, 1, "cli")
    assert bytes(r.buf[r.pos :]) == b"body"
    w = Writer()
    headers.encode_request_header(w, 3, 1, 9, None)
    assert w.getvalue() == b"\x00\x03\x00\x01\x00\x00\x00\x09\xff\xff"
    assert headers.decode_request_header(Reader(w.getvalue())).client_id is None
    with pytest.raises(MalformedFrameError):
        headers.decode_request_header(Reader(b"\x00\x12\x00\x03\x00\x00"))


def test_response_header() -> None:
    w = Writer()
    headers.encode_response_header(w, 5, 0)
    assert w.getvalue() == b"\x00\x00\x00\x05"
    w = Writer()
    headers.encode_response_header(w, 5, 1)
    assert w.getvalue() == b"\x00\x00\x00\x05\x00"


# --- interop with kafka-python ----------------------------------------------------------------


def _kafka_python_encode(module: str, name: str, version: int, **fields: Any) -> bytes | None:
    try:
        mod = importlib.import_module(module)
        cls = getattr(mod, name)
        obj = cls(**fields)
        data = obj.encode(version=version)
    except Exception:
        return None
    return bytes(data)


def test_kafka_python_cross_check() -> None:
    """kafka-python's own encoders, where its API allows a direct body encode."""
    data = _kafka_python_encode(
        "kafka.protocol.metadata",
        "MetadataRequest",
        12,
        topics=None,
        allow_auto_topic_creation=True,
        include_topic_authorized_operations=False,
    )
    if data is None:
        pytest.skip("kafka-python's message API is not the one this test knows")
    assert decode(messages.MetadataRequest, data, 12) == messages.MetadataRequest(topics=None)

"""`ServerConnection`, the sans-I/O protocol state: framing, header checks, bounds and order.

No sockets here: bytes go in through `receive`, response frames come out of `respond`.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.broker.handlers import SUPPORTED_VERSIONS
from headwater.protocol import headers
from headwater.protocol import messages as m
from headwater.protocol._primitives import ApiMessage, Reader, Writer
from headwater.protocol.connection import (
    ProtocolViolation,
    Request,
    ServerConnection,
    State,
)
from headwater.protocol.messages import REQUEST_TYPES, RESPONSE_TYPES

API_VERSIONS = 18
METADATA = 3


def payload(
    api_key: int,
    version: int,
    correlation_id: int,
    body: ApiMessage | None = None,
    client_id: str | None = "test-client",
) -> bytes:
    writer = Writer()
    headers.encode_request_header(writer, api_key, version, correlation_id, client_id)
    if body is not None:
        body.encode(writer, version)
    return writer.getvalue()


def framed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big", signed=True) + data


def request_frame(
    api_key: int, version: int, correlation_id: int, body: ApiMessage | None = None
) -> bytes:
    if body is None:
        body = REQUEST_TYPES[api_key]()
    return framed(payload(api_key, version, correlation_id, body))


def metadata_frame(correlation_id: int, version: int = 12) -> bytes:
    body = m.MetadataRequest(topics=[m.MetadataRequestMetadataRequestTopic(name="orders")])
    return request_frame(METADATA, version, correlation_id, body)


def connection(**kwargs: int) -> ServerConnection:
    return ServerConnection(supported=SUPPORTED_VERSIONS, **kwargs)


def decode_response(frame: bytes, api_key: int, version: int) -> tuple[int, ApiMessage]:
    """Split a response frame (size prefix included) into its correlation id and body."""
    size = int.from_bytes(frame[:4], "big", signed=True)
    assert size == len(frame) - 4
    reader = Reader(frame[4:])
    correlation_id = reader.int32()
    if headers.response_header_version(api_key, version) >= 1:
        reader.skip_tagged_fields()
    body = RESPONSE_TYPES[api_key].decode(reader, version)
    reader.expect_end()
    return correlation_id, body


def encoded(body: ApiMessage, version: int) -> bytes:
    writer = Writer()
    body.encode(writer, version)
    return writer.getvalue()


# --- framing ------------------------------------------------------------------------------


def test_one_frame_decodes_to_a_request() -> None:
    conn = connection()
    frame = metadata_frame(7)
    [request] = conn.receive(frame)
    assert (request.api_key, request.api_version, request.correlation_id) == (METADATA, 12, 7)
    assert request.client_id == "test-client"
    assert request.error is None
    assert request.size_bytes == len(frame) - 4
    assert [topic.name for topic in request.body.topics] == ["orders"]
    assert conn.in_flight == 1
    assert conn.state is State.OPEN


@pytest.mark.parametrize("version", [0, 3, 12])
def test_a_frame_split_at_every_byte_boundary(version: int) -> None:
    frame = metadata_frame(41, version)
    for cut in range(len(frame) + 1):
        conn = connection()
        first = conn.receive(frame[:cut])
        second = conn.receive(frame[cut:])
        assert len(first) + len(second) == 1, cut
        assert (first + second)[0].correlation_id == 41
        assert (cut == len(frame)) == bool(first)


def test_a_frame_fed_one_byte_at_a_time() -> None:
    frames = metadata_frame(1) + request_frame(API_VERSIONS, 3, 2) + metadata_frame(3, 1)
    conn = connection()
    got: list[Request] = []
    for index in range(len(frames)):
        got += conn.receive(frames[index : index + 1])
    assert [request.correlation_id for request in got] == [1, 2, 3]
    assert [request.api_version for request in got] == [12, 3, 1]


def test_several_frames_in_one_chunk() -> None:
    frames = b"".join(metadata_frame(number) for number in range(10))
    conn = connection()
    got = conn.receive(frames)
    assert [request.correlation_id for request in got] == list(range(10))
    assert conn.in_flight == 10


def test_frames_and_a_partial_frame_in_one_chunk() -> None:
    whole = metadata_frame(1) + metadata_frame(2)
    third = metadata_frame(3)
    conn = connection()
    assert [r.correlation_id for r in conn.receive(whole + third[:5])] == [1, 2]
    assert [r.correlation_id for r in conn.receive(third[5:])] == [3]


def test_a_zero_length_chunk_is_harmless() -> None:
    conn = connection()
    assert conn.receive(b"") == []
    assert conn.receive(bytearray()) == []
    assert conn.state is State.OPEN


def test_memoryview_and_bytearray_input() -> None:
    frame = metadata_frame(5)
    conn = connection()
    assert conn.receive(memoryview(frame)[:10]) == []
    [request] = conn.receive(bytearray(frame[10:]))
    assert request.correlation_id == 5


def test_a_frame_over_the_bound_closes() -> None:
    conn = connection(frame_bytes_max=1024)
    with pytest.raises(ProtocolViolation):
        conn.receive((1025).to_bytes(4, "big"))
    assert conn.state is State.CLOSED
    assert not conn.wants_more


def test_a_frame_at_the_bound_is_accepted() -> None:
    body = m.MetadataRequest(topics=[m.MetadataRequestMetadataRequestTopic(name="t" * 200)])
    frame = request_frame(METADATA, 12, 1, body)
    conn = connection(frame_bytes_max=len(frame) - 4)
    [request] = conn.receive(frame)
    assert request.body.topics[0].name == "t" * 200


def test_a_huge_size_prefix_closes_before_any_body_arrives() -> None:
    conn = connection()
    with pytest.raises(ProtocolViolation):
        conn.receive(b"\x7f\xff\xff\xff")
    assert conn.state is State.CLOSED


@pytest.mark.parametrize("size", [-1, -(2**31), -100])
def test_a_negative_size_closes(size: int) -> None:
    conn = connection()
    with pytest.raises(ProtocolViolation):
        conn.receive(size.to_bytes(4, "big", signed=True) + b"\x00" * 16)
    assert conn.state is State.CLOSED


def test_a_bad_frame_after_good_ones_closes_after_answering_them() -> None:
    conn = connection()
    # As Kafka does: the good request comes back to be answered, the violation is kept.
    requests = conn.receive(metadata_frame(1) + (-1).to_bytes(4, "big", signed=True))
    assert [request.api_key for request in requests] == [METADATA]
    assert conn.violation is not None
    assert conn.state is State.CLOSED
    with pytest.raises(ProtocolViolation):
        conn.receive(b"")


@pytest.mark.parametrize("keep", [0, 1, 2, 3, 5, 7, 9])
def test_a_truncated_header_closes(keep: int) -> None:
    # Metadata v1 header: api key (2), version (2), correlation id (4), client id (2 + n).
    header = payload(METADATA, 1, 9, None, client_id="abc")
    assert len(header) == 13
    conn = connection()
    with pytest.raises(ProtocolViolation, match="header"):
        conn.receive(framed(header[:keep]))
    assert conn.state is State.CLOSED


def test_a_client_id_longer_than_the_frame_closes() -> None:
    header = bytearray(payload(METADATA, 1, 9, None, client_id="abc"))
    header[8:10] = (500).to_bytes(2, "big")
    conn = connection()
    with pytest.raises(ProtocolViolation):
        conn.receive(framed(bytes(header)))
    assert conn.state is State.CLOSED


def test_a_truncated_flexible_header_closes() -> None:
    # Metadata v12 uses header v2: the tagged-field section after the client id is missing.
    header = payload(METADATA, 12, 9, None, client_id="abc")
    conn = connection()
    with pytest.raises(ProtocolViolation):
        conn.receive(framed(header[:-1]))


def test_a_truncated_body_closes() -> None:
    full = payload(METADATA, 12, 3, m.MetadataRequest(topics=[]))
    conn = connection()
    with pytest.raises(ProtocolViolation, match="body"):
        conn.receive(framed(full[:-2]))
    assert conn.state is State.CLOSED


@pytest.mark.parametrize("api_key", [7, 10, 999, -1, 32767])
def test_an_unknown_api_key_closes(api_key: int) -> None:
    conn = connection()
    with pytest.raises(ProtocolViolation, match="API key"):
        conn.receive(framed(payload(api_key, 0, 1, None)))
    assert conn.state is State.CLOSED


@pytest.mark.parametrize("version", [13, 99, -1])
def test_an_unsupported_version_closes(version: int) -> None:
    conn = connection()
    with pytest.raises(ProtocolViolation, match="version"):
        conn.receive(framed(payload(METADATA, version, 1, None)))
    assert conn.state is State.CLOSED


@pytest.mark.parametrize("version", [4, 99, 32767, -1])
def test_an_unsupported_api_versions_is_still_a_request(version: int) -> None:
    conn = connection()
    # A newer client's body is unknown to us; whatever follows the header is ignored.
    [request] = conn.receive(framed(payload(API_VERSIONS, version, 77, None) + b"\x01\x02\x03"))
    assert request.api_key == API_VERSIONS
    assert request.api_version == version
    assert request.correlation_id == 77
    assert request.body is None
    assert request.error is not None and str(version) in request.error
    assert conn.state is State.OPEN
    # The answer is v0 with UNSUPPORTED_VERSION, in a v0 response header.
    frame = conn.respond(request, m.ApiVersionsResponse(error_code=35), version=0).getvalue()
    correlation_id, body = decode_response(frame, API_VERSIONS, 0)
    assert correlation_id == 77
    assert isinstance(body, m.ApiVersionsResponse)
    assert body.error_code == 35


def test_every_supported_version_of_every_api_decodes() -> None:
    conn = connection(in_flight_max=10_000)
    expected = []
    chunk = bytearray()
    for api_key, (low, high) in sorted(SUPPORTED_VERSIONS.items()):
        for version in range(low, high + 1):
            chunk += request_frame(api_key, version, len(expected))
            expected.append((api_key, version))
    got = conn.receive(bytes(chunk))
    assert [(r.api_key, r.api_version) for r in got] == expected
    assert [r.correlation_id for r in got] == list(range(len(expected)))
    assert all(r.error is None and r.body is not None for r in got)


def test_a_closed_connection_refuses_everything() -> None:
    conn = connection()
    assert len(conn.receive(metadata_frame(1))) == 1
    conn.close()
    assert conn.state is State.CLOSED
    assert not conn.wants_more
    with pytest.raises(ProtocolViolation):
        conn.receive(metadata_frame(2))


# --- in-flight bound and response order --------------------------------------------------


def test_wants_more_is_false_at_the_in_flight_bound() -> None:
    conn = connection(in_flight_max=3)
    assert conn.wants_more
    requests = conn.receive(metadata_frame(1) + metadata_frame(2))
    assert conn.wants_more
    requests += conn.receive(metadata_frame(3))
    assert conn.in_flight == 3
    assert not conn.wants_more
    conn.respond(requests[0], m.MetadataResponse())
    assert conn.in_flight == 2
    assert conn.wants_more
    conn.skip_response(requests[1])
    conn.respond(requests[2], m.MetadataResponse())
    assert conn.in_flight == 0
    assert conn.wants_more


def test_responses_must_follow_request_order() -> None:
    conn = connection()
    first, second = conn.receive(metadata_frame(1) + metadata_frame(2))
    with pytest.raises(ProtocolViolation, match="order"):
        conn.respond(second, m.MetadataResponse())
    with pytest.raises(ProtocolViolation, match="order"):
        conn.skip_response(second)
    assert conn.in_flight == 2
    conn.respond(first, m.MetadataResponse())
    conn.respond(second, m.MetadataResponse())
    with pytest.raises(ProtocolViolation):
        conn.respond(second, m.MetadataResponse())  # answered already


def test_a_response_to_a_request_from_elsewhere_is_refused() -> None:
    conn, other = connection(), connection()
    conn.receive(metadata_frame(1))
    [foreign] = other.receive(metadata_frame(1))
    with pytest.raises(ProtocolViolation):
        conn.respond(foreign, m.MetadataResponse())


def test_respond_with_nothing_awaiting_is_refused() -> None:
    conn = connection()
    [request] = connection().receive(metadata_frame(1))
    with pytest.raises(ProtocolViolation):
        conn.respond(request, m.MetadataResponse())


@pytest.mark.parametrize(
    ("api_key", "version"),
    [(METADATA, 12), (METADATA, 8), (METADATA, 0), (API_VERSIONS, 3), (API_VERSIONS, 0), (0, 9)],
)
def test_a_response_frame_decodes_back(api_key: int, version: int) -> None:
    conn = connection()
    [request] = conn.receive(request_frame(api_key, version, 123_456))
    if api_key == METADATA:
        body: ApiMessage = m.MetadataResponse(
            brokers=[m.MetadataResponseMetadataResponseBroker(node_id=1, host="h", port=9)],
            cluster_id="cluster" if version >= 2 else None,
            controller_id=1,
            topics=[m.MetadataResponseMetadataResponseTopic(error_code=3, name="gone")],
        )
    elif api_key == API_VERSIONS:
        body = m.ApiVersionsResponse(
            api_keys=[
                m.ApiVersionsResponseApiVersion(api_key=key, min_version=low, max_version=high)
                for key, (low, high) in sorted(SUPPORTED_VERSIONS.items())
            ]
        )
    else:
        body = m.ProduceResponse(
            responses=[
                m.ProduceResponseTopicProduceResponse(
                    name="orders",
                    partition_responses=[
                        m.ProduceResponsePartitionProduceResponse(index=0, base_offset=42)
                    ],
                )
            ]
        )
    writer = conn.respond(request, body)
    frame = writer.getvalue()
    assert b"".join(bytes(chunk) for chunk in writer.chunks()) == frame
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    correlation_id, decoded = decode_response(frame, api_key, version)
    assert correlation_id == 123_456
    # Fields a version lacks do not travel, so compare what the version carries.
    assert encoded(decoded, version) == encoded(body, version)
    assert type(decoded) is type(body)


def test_a_large_record_set_in_a_response_is_framed_right() -> None:
    conn = connection()
    [request] = conn.receive(request_frame(1, 12, 5))
    records = bytes(range(256)) * 64  # past the writer's zero-copy threshold
    body = m.FetchResponse(
        responses=[
            m.FetchResponseFetchableTopicResponse(
                topic="t",
                partitions=[m.FetchResponsePartitionData(partition_index=0, records=records)],
            )
        ]
    )
    frame = conn.respond(request, body).getvalue()
    correlation_id, decoded = decode_response(frame, 1, 12)
    assert correlation_id == 5
    assert bytes(decoded.responses[0].partitions[0].records) == records  # type: ignore[attr-defined]


# --- properties ---------------------------------------------------------------------------

_SAMPLE_FRAMES = [
    metadata_frame(1),
    metadata_frame(2, 1),
    request_frame(API_VERSIONS, 3, 3),
    request_frame(API_VERSIONS, 0, 4),
    request_frame(
        0,
        9,
        5,
        m.ProduceRequest(
            acks=-1,
            timeout_ms=1000,
            topic_data=[
                m.ProduceRequestTopicProduceData(
                    name="orders",
                    partition_data=[
                        m.ProduceRequestPartitionProduceData(index=0, records=b"\x00" * 70)
                    ],
                )
            ],
        ),
    ),
    request_frame(
        1,
        12,
        6,
        m.FetchRequest(
            topics=[
                m.FetchRequestFetchTopic(
                    topic="orders",
                    partitions=[m.FetchRequestFetchPartition(partition=0, fetch_offset=3)],
                )
            ]
        ),
    ),
    request_frame(
        32,
        4,
        7,
        m.DescribeConfigsRequest(
            resources=[
                m.DescribeConfigsRequestDescribeConfigsResource(
                    resource_type=2, resource_name="orders", configuration_keys=None
                )
            ]
        ),
    ),
]


def _feed(conn: ServerConnection, data: bytes, cuts: list[int]) -> list[Request]:
    got: list[Request] = []
    position = 0
    for cut in [*sorted(cuts), len(data)]:
        got += conn.receive(data[position:cut])
        position = cut
    return got


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=20))
def test_random_bytes_raise_nothing_but_protocol_violation(data: bytes, cuts: list[int]) -> None:
    conn = connection(frame_bytes_max=4096)
    try:
        got = _feed(conn, data, [cut for cut in cuts if cut <= len(data)])
    except ProtocolViolation:
        assert conn.state is State.CLOSED
        assert not conn.wants_more
        return
    assert conn.state is State.OPEN
    assert all(isinstance(request, Request) for request in got)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame with bytes flipped, inserted or deleted; the size prefix kept consistent."""
    frame = bytearray(draw(st.sampled_from(_SAMPLE_FRAMES))[4:])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "byte"]))
        at = draw(st.integers(0, len(frame)))
        if kind == "flip" and at < len(frame):
            frame[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and at < len(frame):
            frame[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x01]))
        elif kind == "insert":
            frame[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del frame[at : at + draw(st.integers(1, 8))]
    return framed(bytes(frame))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(mutated_frames(), min_size=1, max_size=4), seed=st.integers(0, 2**32))
def test_mutated_frames_raise_nothing_but_protocol_violation(
    frames: list[bytes], seed: int
) -> None:
    data = b"".join(frames)
    chooser = random.Random(seed)
    cuts = [chooser.randrange(len(data) + 1) for _ in range(chooser.randrange(6))]
    conn = connection()
    try:
        got = _feed(conn, data, cuts)
    except ProtocolViolation:
        assert conn.state is State.CLOSED
        return
    for request in got:
        if request.body is None:
            assert request.api_key == API_VERSIONS and request.error
        else:
            assert isinstance(request.body, REQUEST_TYPES[request.api_key])


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.sampled_from(range(len(_SAMPLE_FRAMES))), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_valid_frames_decode_the_same_however_they_are_split(
    picks: list[int], cuts: list[int]
) -> None:
    data = b"".join(_SAMPLE_FRAMES[pick] for pick in picks)
    whole = connection().receive(data)
    split = _feed(connection(), data, [cut for cut in cuts if cut <= len(data)])
    assert [(r.api_key, r.api_version, r.correlation_id, r.body) for r in split] == [
        (r.api_key, r.api_version, r.correlation_id, r.body) for r in whole
    ]
    assert len(whole) == len(picks)

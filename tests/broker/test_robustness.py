"""A real `headwater serve` under hostile and careless clients, over loopback.

Garbage, lies about sizes, half frames, unknown APIs, corrupt batches, bad acks, a fuzz loop of
mutated valid requests, hundreds of idle sockets and a client that never reads: the broker
answers with Kafka's error codes or closes that one connection, never crashes, never logs a
traceback, and afterwards still serves a real client and shuts down to a data directory that
`headwater log verify` finds clean.

One broker serves the whole module (its survival across all of it is the point); each test
checks it is still healthy, and the last one shuts it down and verifies its data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import ServedBroker, start_broker

from headwater.broker.handlers import SUPPORTED_VERSIONS
from headwater.log.record_batch import NewRecord, encode_batch
from headwater.protocol import headers
from headwater.protocol import messages as m
from headwater.protocol._primitives import ApiMessage, Reader, Writer
from headwater.protocol.connection import ProtocolViolation, ServerConnection

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS, CREATE_TOPICS = 0, 1, 2, 3, 18, 19
DESCRIBE_CONFIGS = 32
NONE, OFFSET_OUT_OF_RANGE, CORRUPT_MESSAGE, UNKNOWN_TOPIC_OR_PARTITION = 0, 1, 2, 3
MESSAGE_TOO_LARGE, INVALID_REQUIRED_ACKS, UNSUPPORTED_VERSION = 10, 21, 35

TOPIC = "robust"
SMALL_TOPIC = "robust-small"  # max.message.bytes=2048
SMALL_MAX_MESSAGE_BYTES = 2048
FUZZ_SEED = int(os.environ.get("HEADWATER_FUZZ_SEED", "20240611"))
FUZZ_FRAMES = int(os.environ.get("HEADWATER_FUZZ_FRAMES", "300"))
FUZZ_SECONDS_MAX = float(os.environ.get("HEADWATER_FUZZ_SECONDS", "60"))

_quiet = logging.getLogger("librdkafka-robustness")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


# --- a raw Kafka client -------------------------------------------------------------------


def encode_request(
    api_key: int,
    version: int,
    correlation_id: int,
    body: ApiMessage | None,
    client_id: str = "robustness",
) -> bytes:
    """The frame payload (no size prefix): header and body."""
    writer = Writer()
    headers.encode_request_header(writer, api_key, version, correlation_id, client_id)
    if body is not None:
        body.encode(writer, version)
    return writer.getvalue()


def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big", signed=True) + payload


class RawClient:
    """A blocking socket speaking just enough Kafka to send frames and read answers."""

    def __init__(self, broker: ServedBroker, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._correlation = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exactly(self, count: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < count:
            chunk = self.sock.recv(count - len(chunks))
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)

    def read_frame(self) -> bytes | None:
        """One response frame's payload, or None at EOF (the broker closed)."""
        prefix = self._read_exactly(4)
        if prefix is None:
            return None
        size = int.from_bytes(prefix, "big", signed=True)
        assert 0 <= size < 256 * 1024 * 1024, size
        payload = self._read_exactly(size)
        assert payload is not None, "the broker closed mid-frame"
        return payload

    def request(
        self, api_key: int, version: int, body: ApiMessage | None, response_version: int = -1
    ) -> ApiMessage:
        self._correlation += 1
        correlation_id = self._correlation
        self.send(framed(encode_request(api_key, version, correlation_id, body)))
        payload = self.read_frame()
        assert payload is not None, f"the broker closed instead of answering API {api_key}"
        version = version if response_version < 0 else response_version
        got_id, response = decode_response(payload, api_key, version)
        assert got_id == correlation_id
        return response

    def expect_closed(self, timeout: float = 10.0) -> None:
        """The broker closes the connection (EOF or reset) without answering."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return
        assert data == b"", f"expected the broker to close; it sent {data[:64]!r}"


def decode_response(payload: bytes, api_key: int, version: int) -> tuple[int, ApiMessage]:
    reader = Reader(payload)
    correlation_id = reader.int32()
    if headers.response_header_version(api_key, version) >= 1:
        reader.skip_tagged_fields()
    body = m.RESPONSE_TYPES[api_key].decode(reader, version)
    reader.expect_end()
    return correlation_id, body


def produce_request(
    topic: str, records: bytes, *, acks: int = -1, partition: int = 0
) -> m.ProduceRequest:
    return m.ProduceRequest(
        acks=acks,
        timeout_ms=5000,
        topic_data=[
            m.ProduceRequestTopicProduceData(
                name=topic,
                partition_data=[
                    m.ProduceRequestPartitionProduceData(index=partition, records=records)
                ],
            )
        ],
    )


def fetch_request(
    topic: str, offset: int, *, max_bytes: int = 1024 * 1024, max_wait_ms: int = 0
) -> m.FetchRequest:
    return m.FetchRequest(
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        max_bytes=max_bytes,
        topics=[
            m.FetchRequestFetchTopic(
                topic=topic,
                partitions=[
                    m.FetchRequestFetchPartition(
                        partition=0, fetch_offset=offset, partition_max_bytes=max_bytes
                    )
                ],
            )
        ],
    )


def a_batch(count: int = 3, value_size: int = 20) -> bytes:
    return encode_batch(
        [NewRecord(b"k%d" % n, bytes([65 + n % 26]) * value_size) for n in range(count)]
    )


def partition_result(response: ApiMessage) -> m.ProduceResponsePartitionProduceResponse:
    assert isinstance(response, m.ProduceResponse)
    [topic] = response.responses
    [partition] = topic.partition_responses
    return partition


# --- the broker ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    base = tmp_path_factory.mktemp("robustness")
    served = start_broker(base / "data", base / "broker.log")
    with RawClient(served) as client:
        response = client.request(
            CREATE_TOPICS,
            5,
            m.CreateTopicsRequest(
                topics=[
                    m.CreateTopicsRequestCreatableTopic(
                        name=TOPIC, num_partitions=1, replication_factor=1
                    ),
                    m.CreateTopicsRequestCreatableTopic(
                        name=SMALL_TOPIC,
                        num_partitions=1,
                        replication_factor=1,
                        configs=[
                            m.CreateTopicsRequestCreatableTopicConfig(
                                name="max.message.bytes", value=str(SMALL_MAX_MESSAGE_BYTES)
                            )
                        ],
                    ),
                ]
            ),
        )
        assert isinstance(response, m.CreateTopicsResponse)
        assert [(t.name, t.error_code) for t in response.topics] == [
            (TOPIC, NONE),
            (SMALL_TOPIC, NONE),
        ], response
    yield served
    served.stop()


def log_text(broker: ServedBroker) -> str:
    return broker.log_path.read_text(errors="replace")


def assert_healthy(broker: ServedBroker) -> None:
    """Alive, no traceback logged, and answering a fresh client promptly."""
    assert broker.process.poll() is None, f"the broker died: {broker.log_tail()}"
    assert "Traceback" not in log_text(broker), broker.log_tail()
    with RawClient(broker, timeout=10) as client:
        response = client.request(API_VERSIONS, 3, m.ApiVersionsRequest())
        assert isinstance(response, m.ApiVersionsResponse)
        assert response.error_code == NONE
    assert broker.process.poll() is None


# --- garbage on the wire ------------------------------------------------------------------


def test_random_bytes(broker: ServedBroker) -> None:
    chooser = random.Random(FUZZ_SEED)
    for length in (1, 3, 4, 5, 17, 100, 4096, 70_000):
        with RawClient(broker) as client:
            data = chooser.randbytes(length)
            with contextlib.suppress(OSError):
                client.send(data)
            size = int.from_bytes(data[:4], "big", signed=True) if length >= 4 else 0
            if length >= 4 and not 0 <= size <= 100 * 1024 * 1024:
                client.expect_closed()
    assert_healthy(broker)


def test_a_2_gib_size_prefix_is_refused_without_allocating(broker: ServedBroker) -> None:
    for prefix in (b"\x7f\xff\xff\xff", b"\x06\x40\x00\x01"):  # 2 GiB - 1, 100 MiB + 1
        with RawClient(broker) as client:
            client.send(prefix + b"\x00" * 64)
            client.expect_closed()
    assert_healthy(broker)


@pytest.mark.parametrize("size", [-1, -(2**31), -4096])
def test_a_negative_size_closes_the_connection(broker: ServedBroker, size: int) -> None:
    with RawClient(broker) as client:
        client.send(size.to_bytes(4, "big", signed=True) + b"\x00\x12\x00\x00")
        client.expect_closed()
    assert_healthy(broker)


def test_a_truncated_body_then_close(broker: ServedBroker) -> None:
    payload = encode_request(METADATA, 12, 1, m.MetadataRequest(topics=None))
    for keep in (0, 1, 7, len(payload) - 1):
        with RawClient(broker) as client:
            client.send(framed(payload)[: 4 + keep])
            client.sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.sock.recv(1)  # the broker waits for the rest
    # The same, with a claimed size far larger than what ever arrives.
    with RawClient(broker) as client:
        client.send((50 * 1024 * 1024).to_bytes(4, "big") + payload)
    assert_healthy(broker)


def test_a_truncated_body_inside_a_whole_frame_closes(broker: ServedBroker) -> None:
    payload = encode_request(METADATA, 12, 1, m.MetadataRequest(topics=None))
    with RawClient(broker) as client:
        client.send(framed(payload[:-1]))
        client.expect_closed()
    assert_healthy(broker)


@pytest.mark.parametrize("api_key", [24, 57, 999, 32767, -1])
def test_an_unknown_api_key_closes_the_connection(broker: ServedBroker, api_key: int) -> None:
    with RawClient(broker) as client:
        client.send(framed(encode_request(api_key, 0, 5, None) + b"\x00" * 8))
        client.expect_closed()
    assert_healthy(broker)


@pytest.mark.parametrize("version", [13, 99, -1])
def test_an_unsupported_metadata_version_closes_the_connection(
    broker: ServedBroker, version: int
) -> None:
    with RawClient(broker) as client:
        client.send(framed(encode_request(METADATA, version, 5, None)))
        client.expect_closed()
    assert_healthy(broker)


@pytest.mark.parametrize("version", [4, 99, 32767])
def test_an_unsupported_api_versions_gets_error_35_in_v0(
    broker: ServedBroker, version: int
) -> None:
    with RawClient(broker) as client:
        client.send(framed(encode_request(API_VERSIONS, version, 4242, None) + b"\x00\x01\x02"))
        payload = client.read_frame()
        assert payload is not None
        correlation_id, response = decode_response(payload, API_VERSIONS, 0)
        assert correlation_id == 4242
        assert isinstance(response, m.ApiVersionsResponse)
        assert response.error_code == UNSUPPORTED_VERSION
        advertised = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
        assert advertised[API_VERSIONS] == SUPPORTED_VERSIONS[API_VERSIONS]
        # The connection stays usable: the client retries with a version we have.
        again = client.request(API_VERSIONS, 3, m.ApiVersionsRequest())
        assert isinstance(again, m.ApiVersionsResponse)
        assert again.error_code == NONE
    assert_healthy(broker)


# --- well-formed frames carrying bad requests -------------------------------------------


@pytest.mark.parametrize("version", [3, 7, 9])
def test_a_corrupt_batch_crc_gets_corrupt_message(broker: ServedBroker, version: int) -> None:
    batch = bytearray(a_batch())
    batch[-3] ^= 0x10  # a record byte, covered by the CRC
    with RawClient(broker) as client:
        response = client.request(PRODUCE, version, produce_request(TOPIC, bytes(batch)))
        assert partition_result(response).error_code == CORRUPT_MESSAGE
        # Still open, and the log took nothing.
        ok = client.request(PRODUCE, version, produce_request(TOPIC, a_batch()))
        assert partition_result(ok).error_code == NONE
    assert_healthy(broker)


def test_a_corrupt_crc_field_gets_corrupt_message(broker: ServedBroker) -> None:
    batch = bytearray(a_batch())
    batch[18] ^= 0xFF  # inside the CRC itself
    with RawClient(broker) as client:
        response = client.request(PRODUCE, 9, produce_request(TOPIC, bytes(batch)))
        assert partition_result(response).error_code == CORRUPT_MESSAGE
    assert_healthy(broker)


def test_a_batch_over_max_message_bytes_gets_message_too_large(broker: ServedBroker) -> None:
    big = a_batch(count=4, value_size=SMALL_MAX_MESSAGE_BYTES)
    assert len(big) > SMALL_MAX_MESSAGE_BYTES
    small = a_batch(count=2, value_size=100)
    with RawClient(broker) as client:
        response = client.request(PRODUCE, 9, produce_request(SMALL_TOPIC, big))
        assert partition_result(response).error_code == MESSAGE_TOO_LARGE
        ok = client.request(PRODUCE, 9, produce_request(SMALL_TOPIC, small))
        assert partition_result(ok).error_code == NONE
    assert_healthy(broker)


@pytest.mark.parametrize("version", [3, 9])
def test_produce_to_an_unknown_topic(broker: ServedBroker, version: int) -> None:
    with RawClient(broker) as client:
        response = client.request(PRODUCE, version, produce_request("no-such-topic", a_batch()))
        result = partition_result(response)
        assert result.error_code == UNKNOWN_TOPIC_OR_PARTITION
        missing = client.request(PRODUCE, version, produce_request(TOPIC, a_batch(), partition=7))
        assert partition_result(missing).error_code == UNKNOWN_TOPIC_OR_PARTITION
    assert_healthy(broker)


@pytest.mark.parametrize("acks", [5, 2, -2, 32767])
def test_invalid_acks(broker: ServedBroker, acks: int) -> None:
    with RawClient(broker) as client:
        response = client.request(PRODUCE, 9, produce_request(TOPIC, a_batch(), acks=acks))
        assert partition_result(response).error_code == INVALID_REQUIRED_ACKS
    assert_healthy(broker)


def test_fetch_out_of_range(broker: ServedBroker) -> None:
    with RawClient(broker) as client:
        for offset in (1_000_000, -5):
            response = client.request(FETCH, 12, fetch_request(TOPIC, offset))
            assert isinstance(response, m.FetchResponse)
            assert response.error_code == NONE
            [topic] = response.responses
            [partition] = topic.partitions
            assert partition.error_code == OFFSET_OUT_OF_RANGE, offset
            assert partition.high_watermark >= 0
        fine = client.request(FETCH, 12, fetch_request(TOPIC, 0))
        assert isinstance(fine, m.FetchResponse)
        assert fine.responses[0].partitions[0].error_code == NONE
    assert_healthy(broker)


def test_garbage_records_in_a_produce(broker: ServedBroker) -> None:
    """Records that are not a batch at all: an error code, not a closed connection."""
    chooser = random.Random(FUZZ_SEED + 1)
    garbage = [b"", b"\x00", chooser.randbytes(60), chooser.randbytes(61), chooser.randbytes(500)]
    garbage.append(a_batch() + b"\x00")  # trailing bytes after one whole batch
    garbage.append(a_batch()[:-1])  # a batch cut short
    with RawClient(broker) as client:
        for records in garbage:
            response = client.request(PRODUCE, 9, produce_request(TOPIC, records))
            assert partition_result(response).error_code != NONE, records[:16]
    assert_healthy(broker)


@pytest.mark.parametrize("version", [1, 4])
def test_describe_configs_of_a_topic(headwater_broker: ServedBroker, version: int) -> None:
    """On its own broker: the traceback this logs today must not poison the shared one."""
    with RawClient(headwater_broker, timeout=2) as client:
        created = client.request(
            CREATE_TOPICS,
            5,
            m.CreateTopicsRequest(
                topics=[
                    m.CreateTopicsRequestCreatableTopic(
                        name=TOPIC, num_partitions=1, replication_factor=1
                    )
                ]
            ),
        )
        assert isinstance(created, m.CreateTopicsResponse)
        response = client.request(
            DESCRIBE_CONFIGS,
            version,
            m.DescribeConfigsRequest(
                resources=[
                    m.DescribeConfigsRequestDescribeConfigsResource(
                        resource_type=2, resource_name=TOPIC, configuration_keys=None
                    )
                ]
            ),
        )
        assert isinstance(response, m.DescribeConfigsResponse)
        [result] = response.results
        assert result.error_code == NONE
        assert any(config.name == "max.message.bytes" for config in result.configs)
    assert "Traceback" not in log_text(headwater_broker), headwater_broker.log_tail()


def test_closing_during_a_long_poll(headwater_broker: ServedBroker) -> None:
    """What every consumer does at shutdown: close the socket while a Fetch waits for data."""
    with RawClient(headwater_broker, timeout=5) as client:
        created = client.request(
            CREATE_TOPICS,
            5,
            m.CreateTopicsRequest(
                topics=[
                    m.CreateTopicsRequestCreatableTopic(
                        name=TOPIC, num_partitions=1, replication_factor=1
                    )
                ]
            ),
        )
        assert isinstance(created, m.CreateTopicsResponse)
        client.send(framed(encode_request(FETCH, 12, 1, fetch_request(TOPIC, 0, max_wait_ms=300))))
    time.sleep(1.0)  # the wait ends with the socket long gone
    assert_healthy(headwater_broker)
    # The dead task's exception is logged when it is collected: at the latest, at shutdown.
    assert headwater_broker.stop() == 0
    assert "Traceback" not in log_text(headwater_broker), headwater_broker.log_tail()


# --- fuzz: mutated valid requests ---------------------------------------------------------


def _templates() -> list[tuple[int, int, ApiMessage]]:
    batch = a_batch(count=2, value_size=10)
    return [
        (
            API_VERSIONS,
            3,
            m.ApiVersionsRequest(client_software_name="x", client_software_version="1"),
        ),
        (API_VERSIONS, 0, m.ApiVersionsRequest()),
        (
            METADATA,
            12,
            m.MetadataRequest(topics=[m.MetadataRequestMetadataRequestTopic(name=TOPIC)]),
        ),
        (METADATA, 1, m.MetadataRequest(topics=None)),
        (METADATA, 9, m.MetadataRequest(topics=[])),
        (PRODUCE, 9, produce_request(TOPIC, batch)),
        (PRODUCE, 3, produce_request(TOPIC, batch)),
        (PRODUCE, 7, produce_request(SMALL_TOPIC, batch, acks=1)),
        (FETCH, 12, fetch_request(TOPIC, 0, max_bytes=4096)),
        (FETCH, 4, fetch_request(TOPIC, 1, max_bytes=4096)),
        (
            LIST_OFFSETS,
            7,
            m.ListOffsetsRequest(
                topics=[
                    m.ListOffsetsRequestListOffsetsTopic(
                        name=TOPIC,
                        partitions=[m.ListOffsetsRequestListOffsetsPartition(timestamp=-1)],
                    )
                ]
            ),
        ),
        (
            DESCRIBE_CONFIGS,
            4,
            m.DescribeConfigsRequest(
                resources=[
                    # The broker resource: a topic one trips the DescribeConfigs bug below.
                    m.DescribeConfigsRequestDescribeConfigsResource(
                        resource_type=4, resource_name="1", configuration_keys=None
                    )
                ]
            ),
        ),
        (
            CREATE_TOPICS,
            5,
            m.CreateTopicsRequest(
                topics=[
                    m.CreateTopicsRequestCreatableTopic(
                        name="fuzz-created", num_partitions=1, replication_factor=1
                    )
                ],
                validate_only=True,
            ),
        ),
    ]


_INTERESTING = [
    b"\x00\x00",
    b"\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
]


def _mutate(chooser: random.Random, payload: bytes) -> bytes:
    """Flip, overwrite, insert or delete bytes; mostly once, so many frames still decode."""
    data = bytearray(payload)
    for _ in range(chooser.choice([1, 1, 1, 1, 2, 3, 4])):
        kind = chooser.choice(
            ["flip", "flip", "byte", "int", "int", "insert", "delete", "truncate", "varint"]
        )
        at = chooser.randrange(len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << chooser.randrange(8)
        elif kind == "byte" and at < len(data):
            data[at] = chooser.choice([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF])
        elif kind == "int":
            value = chooser.choice(_INTERESTING)
            data[at : at + len(value)] = value
        elif kind == "insert":
            data[at:at] = chooser.randbytes(chooser.randint(1, 16))
        elif kind == "delete":
            del data[at : at + chooser.randint(1, 16)]
        elif kind == "truncate":
            del data[at:]
        elif kind == "varint" and at < len(data):
            data[at : at + 1] = b"\xff\xff\xff\xff\x0f"
    return bytes(data)


# A Fetch may wait up to max_wait_ms; longer waits are not sent (see `_expectation`).
FETCH_WAIT_MS_MAX = 1000


def _expectation(payload: bytes) -> tuple[str, int, int, int]:
    """What a correct broker does with this frame: ("close"|"answer"|"silent"|"skip", ...).

    "skip": a Fetch that would long-poll; closing the socket under it trips the broker bug
    that `test_closing_during_a_long_poll` pins, so the fuzz loops leave those out.
    """
    conn = ServerConnection(supported=SUPPORTED_VERSIONS)
    try:
        [request] = conn.receive(framed(payload))
    except ProtocolViolation:
        return "close", 0, 0, 0
    if request.body is None:
        return "answer", request.api_key, 0, request.correlation_id
    body = request.body
    kind = "answer"
    if request.api_key == PRODUCE and body.acks == 0:
        kind = "silent"  # no answer to acks=0
    elif request.api_key == FETCH and body.max_wait_ms > FETCH_WAIT_MS_MAX:
        kind = "skip"
    return kind, request.api_key, request.api_version, request.correlation_id


def _fuzz_frame(
    chooser: random.Random, templates: list[tuple[int, int, ApiMessage]], mutate_share: float
) -> tuple[bytes, tuple[str, int, int, int]]:
    while True:
        api_key, version, body = chooser.choice(templates)
        payload = encode_request(api_key, version, chooser.randrange(2**31), body)
        if chooser.random() < mutate_share:
            payload = _mutate(chooser, payload)
        expected = _expectation(payload)
        if expected[0] != "skip":
            return payload, expected


def test_fuzz_mutated_requests(broker: ServedBroker) -> None:
    chooser = random.Random(FUZZ_SEED)
    templates = _templates()
    started = time.monotonic()
    client: RawClient | None = None
    outcomes: dict[str, int] = {}
    sent = 0
    try:
        while sent < FUZZ_FRAMES and time.monotonic() - started < FUZZ_SECONDS_MAX:
            payload, (expected, key, response_version, correlation_id) = _fuzz_frame(
                chooser, templates, 0.95
            )
            context = f"seed {FUZZ_SEED}, frame {sent}: {payload.hex()}"
            if client is None or chooser.random() < 0.3:
                if client is not None:
                    client.close()
                client = RawClient(broker, timeout=5)
            sent += 1
            try:
                client.send(framed(payload))
                if expected == "silent":
                    client.sock.settimeout(0.2)
                answer = client.read_frame()
            except TimeoutError:
                assert expected == "silent", f"no answer in time; {context}"
                outcomes["silent"] = outcomes.get("silent", 0) + 1
                client.close()
                client = None
                continue
            except (ConnectionResetError, BrokenPipeError):
                answer = None
            if answer is None:
                assert expected == "close", f"the broker closed, expected {expected}; {context}"
                outcomes["closed"] = outcomes.get("closed", 0) + 1
                client.close()
                client = None
                continue
            assert expected != "close", f"the broker answered a bad frame; {context}"
            got_id, _ = decode_response(answer, key, response_version)
            assert got_id == correlation_id, context
            outcomes["answered"] = outcomes.get("answered", 0) + 1
            client.sock.settimeout(5)
            assert broker.process.poll() is None, f"the broker died; {context}"
    finally:
        if client is not None:
            client.close()
    assert sent >= min(100, FUZZ_FRAMES), f"only {sent} frames in {FUZZ_SECONDS_MAX}s"
    assert outcomes.get("answered", 0) > 10 and outcomes.get("closed", 0) > 10, outcomes
    assert_healthy(broker)


def test_fuzz_pipelined_mutations_on_one_connection(broker: ServedBroker) -> None:
    """Valid and mutated frames back to back in one write: answered in order until a bad one."""
    chooser = random.Random(FUZZ_SEED + 2)
    templates = _templates()
    for _ in range(20):
        frames = []
        plan = []
        for _ in range(chooser.randint(2, 8)):
            payload, expected = _fuzz_frame(chooser, templates, 0.3)
            frames.append(framed(payload))
            plan.append(expected)
        with RawClient(broker, timeout=5) as client:
            client.send(b"".join(frames))
            for expected, key, version, correlation_id in plan:
                if expected != "answer":
                    break
                try:
                    answer = client.read_frame()
                except ConnectionResetError:
                    answer = None
                if answer is None:
                    # Known deviation (see the report): requests read in the same chunk as
                    # a bad frame are dropped unanswered; Kafka answers them, then closes.
                    assert any(kind == "close" for kind, *_ in plan), plan
                    break
                assert decode_response(answer, key, version)[0] == correlation_id
    assert_healthy(broker)


# --- connection bounds --------------------------------------------------------------------


def test_many_idle_connections(broker: ServedBroker) -> None:
    sockets = []
    try:
        for _ in range(200):
            sockets.append(socket.create_connection(("127.0.0.1", broker.port), timeout=10))
        # Some send half a frame and stall; the rest say nothing.
        for sock in sockets[::7]:
            sock.sendall(b"\x00\x00\x01\x00\x00\x03")
        started = time.monotonic()
        assert_healthy(broker)
        assert time.monotonic() - started < 5
        # They all still work (those that did not stall on half a frame).
        for sock in [sock for index, sock in enumerate(sockets) if index % 7 and index % 20 == 1]:
            sock.sendall(framed(encode_request(API_VERSIONS, 3, 9, m.ApiVersionsRequest())))
            assert sock.recv(4)
    finally:
        for sock in sockets:
            sock.close()
    assert_healthy(broker)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_client_that_never_reads_is_bounded(broker: ServedBroker) -> None:
    """Requests keep coming, answers are never read: the broker stops reading, stays small."""
    with RawClient(broker) as client:  # about 1 MiB to fetch, again and again
        for _ in range(10):
            response = client.request(PRODUCE, 9, produce_request(TOPIC, a_batch(100, 1000)))
            assert partition_result(response).error_code == NONE
    # 32 KiB frames (a long client id): the kernel's buffers hold only so many of them.
    one_fetch = framed(
        encode_request(FETCH, 12, 1, fetch_request(TOPIC, 0, max_bytes=2**20), "x" * 32_000)
    )
    rss_before = _rss_kib(broker.process.pid)
    greedy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.connect(("127.0.0.1", broker.port))
    greedy.setblocking(False)
    sent_bytes = 0
    cap_bytes = 256 * 1024 * 1024  # answers to that many requests would be about 8 GiB
    blocked_since: float | None = None
    deadline = time.monotonic() + 20
    try:
        pending = memoryview(one_fetch * 32)
        while time.monotonic() < deadline and sent_bytes < cap_bytes:
            try:
                written = greedy.send(pending)
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 1.0:
                    break  # the broker stopped reading from us: back-pressure works
                time.sleep(0.01)
                continue
            blocked_since = None
            sent_bytes += written
            pending = pending[written:]
            if not pending:
                pending = memoryview(one_fetch * 32)
        assert blocked_since is not None, (
            f"the broker kept reading from a client that never reads ({sent_bytes} bytes)"
        )
        assert sent_bytes < 128 * 1024 * 1024, sent_bytes
        started = time.monotonic()
        assert_healthy(broker)
        with RawClient(broker) as other:
            response = other.request(FETCH, 12, fetch_request(TOPIC, 0, max_bytes=2**20))
            assert isinstance(response, m.FetchResponse)
            assert response.responses[0].partitions[0].error_code == NONE
            assert len(response.responses[0].partitions[0].records) > 100_000
        assert time.monotonic() - started < 5
        rss_growth_mib = (_rss_kib(broker.process.pid) - rss_before) / 1024
        assert rss_growth_mib < 300, f"RSS grew {rss_growth_mib:.0f} MiB for one greedy client"
    finally:
        greedy.close()
    assert_healthy(broker)


# --- afterwards ---------------------------------------------------------------------------


def test_zz_afterwards_real_clients_work_and_the_data_verifies(broker: ServedBroker) -> None:
    """Runs last: after everything above, librdkafka still works and the log is clean."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    assert_healthy(broker)
    config = {"bootstrap.servers": broker.bootstrap, "logger": _quiet}
    producer = Producer({**config, "acks": "all", "linger.ms": 5})
    delivered: list[int] = []

    def on_delivery(error: object, message: object) -> None:
        assert error is None, error
        delivered.append(message.offset())  # type: ignore[attr-defined]

    for number in range(100):
        producer.produce("after-fuzz", value=b"value-%d" % number, on_delivery=on_delivery)
    assert producer.flush(20) == 0
    assert sorted(delivered) == list(range(100))
    consumer = Consumer({**config, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition("after-fuzz", 0, 0)])
    values = []
    deadline = time.monotonic() + 20
    while len(values) < 100 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            values.append(message.value())
    consumer.close()
    assert values == [b"value-%d" % number for number in range(100)]

    assert_healthy(broker)
    assert broker.stop() == 0, broker.log_tail()
    assert "Traceback" not in log_text(broker), broker.log_tail()
    verify = subprocess.run(
        [sys.executable, "-m", "headwater", "log", "verify", "--data-dir", str(broker.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


# A restart on the same data directory serves what was written before.
def test_zz_restart_serves_the_old_data(broker: ServedBroker, tmp_path: Path) -> None:
    broker.stop()
    again = start_broker(broker.data_dir, tmp_path / "again.log")
    try:
        with RawClient(again) as client:
            response = client.request(FETCH, 12, fetch_request(TOPIC, 0, max_bytes=4096))
            assert isinstance(response, m.FetchResponse)
            [partition] = response.responses[0].partitions
            assert partition.error_code == NONE
            assert partition.high_watermark > 0
            assert partition.records
    finally:
        assert again.stop() == 0, again.log_tail()

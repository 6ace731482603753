"""The Kafka backend: the client API over librdkafka (confluent-kafka), for any Kafka-protocol
cluster, `headwater serve` or Apache Kafka.

librdkafka differs from Kafka's Java client in places a program can tell; this module makes it
behave like the Java client there:
- Java's defaults where librdkafka's differ (murmur2 partitioner, read_uncommitted, the range
  assignor, idempotence, delivery.timeout.ms, max.request.size, buffer.memory, check.crcs);
- delivery futures resolve without the caller polling (a thread serves librdkafka's queue);
- `on_assign` runs once the partitions are assigned, so it may seek or read positions;
- `seek` works on a partition that is not fetching yet (librdkafka says "Erroneous state");
- `position` is known right after `assign` or `seek`, not only after the first record;
- `unsubscribe` revokes (and calls `on_revoke`) before it returns;
- a consumer without `group.id` can `assign` (librdkafka insists on a group id).

librdkafka's own log lines go to the `headwater.client.librdkafka` logger.
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, NamedTuple, TypeVar

import confluent_kafka
from confluent_kafka import (
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
)

# The admin package defines these in private modules and imports them without re-exporting.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    OffsetSpec,
    ResourceType,
)
from confluent_kafka.admin import NewTopic as NativeNewTopic  # type: ignore[attr-defined]

from headwater._invariant import invariant
from headwater.client._api import (
    Admin,
    Client,
    Consumer,
    DeliveryCallback,
    Producer,
    RebalanceCallback,
)
from headwater.client._config import KEYS, PASSTHROUGH_PREFIX, Role, parse_config, setting
from headwater.client._futures import DeliveryFuture
from headwater.client._serialization import (
    deserialize,
    is_identity,
    passes_bytes,
    resolve_deserializer,
    resolve_serializer,
    serialize,
)
from headwater.client._types import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    ConsumerRecord,
    GroupDescription,
    GroupListing,
    Headers,
    MemberDescription,
    NewTopic,
    PartitionDescription,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)
from headwater.errors import (
    ClientClosedError,
    ClientError,
    ConfigError,
    CorruptRecordError,
    DeserializationError,
    HeadwaterError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidTopicError,
    KafkaTimeoutError,
    OffsetOutOfRangeError,
    RecordBatchTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionError,
)
from headwater.log.partitioner import StickyPartitioner

_log = logging.getLogger("headwater.client.kafka")

# A consumer `poll` waits in slices this long, so `close` from another thread (which
# confluent-kafka serializes with a running poll) waits at most this.
_POLL_SLICE_S = 0.2
# The longest the producer's thread waits inside librdkafka for delivery reports. Kept short:
# while it waits there, each report it serves takes the GIL from a sender that started sending
# meanwhile and gives it back, two thread switches per record (this once cost half of `send`'s
# throughput).
_SERVE_INTERVAL_S = 0.005
# A sender serves delivery reports itself every this many sends; meanwhile (and for
# _SENDER_BUSY_S after) the producer's thread stays out of librdkafka.
_SERVE_EVERY_SENDS = 256
_SENDER_BUSY_S = 0.005
# `unsubscribe` waits at most this for librdkafka to revoke the assignment.
_REVOKE_WAIT_S = 10.0
# Asynchronous commits a consumer may have queued before `commit` refuses more.
_MAX_PENDING_COMMITS = 10_000
# Admin futures: librdkafka enforces the request timeout; this only guards against a lost reply.
_ADMIN_GRACE_S = 10.0


def _librdkafka_logger() -> logging.Logger:
    """Where librdkafka's log lines go: silent unless the application configures logging."""
    logger = logging.getLogger("headwater.client.librdkafka")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


# --- errors -------------------------------------------------------------------------------------
#
# librdkafka reports a KafkaError: Kafka's protocol code (>= 0) or one of its own (< 0). Codes
# with a typed Headwater error raise that type (every one is a `ClientError`), as the embedded
# backend does; everything else is a `ClientError` carrying Kafka's code (-1 for librdkafka's).


_TYPED_ERRORS: dict[int, type[ClientError]] = {
    KafkaError.OFFSET_OUT_OF_RANGE: OffsetOutOfRangeError,
    KafkaError._AUTO_OFFSET_RESET: OffsetOutOfRangeError,
    KafkaError.INVALID_MSG: CorruptRecordError,
    KafkaError.UNKNOWN_TOPIC_OR_PART: UnknownTopicOrPartitionError,
    KafkaError._UNKNOWN_TOPIC: UnknownTopicOrPartitionError,
    KafkaError._UNKNOWN_PARTITION: UnknownTopicOrPartitionError,
    KafkaError.MSG_SIZE_TOO_LARGE: RecordBatchTooLargeError,
    KafkaError.TOPIC_EXCEPTION: InvalidTopicError,
    KafkaError.TOPIC_ALREADY_EXISTS: TopicAlreadyExistsError,
    KafkaError.INVALID_PARTITIONS: InvalidPartitionsError,
    KafkaError.INVALID_CONFIG: ConfigError,
    KafkaError.UNSUPPORTED_COMPRESSION_TYPE: UnsupportedCompressionError,
    KafkaError.INVALID_RECORD: InvalidRecordError,
}
_TIMEOUT_CODES = frozenset(
    {
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
    }
)
# Kafka's retriable codes (librdkafka flags only some of them on the errors it hands over).
_RETRIABLE_CODES = frozenset(
    {
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.KAFKA_STORAGE_ERROR,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)
# Consumer events `poll` raises; the rest (a broker down, a topic not created yet, ...) are
# transient, as the Java consumer treats them, and only logged.
_RAISED_CONSUMER_CODES = frozenset(
    {
        KafkaError._AUTO_OFFSET_RESET,
        KafkaError.OFFSET_OUT_OF_RANGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._FATAL,
        KafkaError._INVALID_ARG,
    }
)

_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+\)$")


def _error_text(error: KafkaError) -> str:
    """librdkafka's message without the broker address prefix and the connection-state
    suffix; librdkafka's own (negative) codes keep their name, which says what happened."""
    text = error.str()
    head, found, tail = text.partition("/bootstrap: ")
    if found and " " not in head:
        text = tail
    text = _STATE_SUFFIX.sub("", text)
    if error.code() < 0 and error.name() not in text:
        text = f"{text} ({error.name()})"
    return text


def map_error(error: KafkaError, context: str = "") -> ClientError:
    """Our error for librdkafka's `error`; `context` says what was being done."""
    code = error.code()
    text = _error_text(error)
    message = f"{context}: {text}" if context else text
    if code in _TIMEOUT_CODES:
        return KafkaTimeoutError(message)
    if code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
        return ClientClosedError(message)  # `close` ran out of time before delivering it
    kind = _TYPED_ERRORS.get(code)
    if kind is not None:
        return kind(message, error_code=kind.error_code, retriable=kind.retriable)
    return ClientError(
        message,
        error_code=code if code >= 0 else -1,
        retriable=error.retriable() or code in _RETRIABLE_CODES,
    )


def _from_exception(exception: KafkaException, context: str = "") -> ClientError:
    error = exception.args[0] if exception.args else None
    if isinstance(error, KafkaError):
        return map_error(error, context)
    return ClientError(f"{context}: {exception}" if context else str(exception))


def _code_of(exception: KafkaException) -> int | None:
    error = exception.args[0] if exception.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _check_partition_errors(native: Sequence[confluent_kafka.TopicPartition], context: str) -> None:
    """Raise the first per-partition error of a librdkafka result list."""
    for item in native:
        if item.error is not None:
            raise map_error(item.error, f"{context} {item.topic}/{item.partition}")


# --- configuration ------------------------------------------------------------------------------

Converter = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _acks(value: int) -> str:
    return "all" if value == -1 else str(value)


def _kilobytes(value: int) -> int:
    return max(1, -(-value // 1024))


def _offset_reset(value: str) -> str:
    return "error" if value == "none" else value


def _assignors(value: tuple[str, ...]) -> str:
    return ",".join(value)


# Our key -> (librdkafka's key, conversion, whether our default is applied when unset). Our
# default is applied where librdkafka's differs in a way a program could tell; elsewhere
# librdkafka's own default stays (batch.size: librdkafka batches by its own measure).
_PRODUCER_KEYS: dict[str, tuple[str, Converter, bool]] = {
    "client.id": ("client.id", _same, True),
    "request.timeout.ms": ("request.timeout.ms", _same, False),
    "acks": ("acks", _acks, True),
    "linger.ms": ("linger.ms", _same, False),
    "batch.size": ("batch.size", _same, False),
    "compression.type": ("compression.type", _same, False),
    "delivery.timeout.ms": ("delivery.timeout.ms", _same, True),  # librdkafka: 300 s
    "max.in.flight.requests.per.connection": ("max.in.flight", _same, True),  # 1000000
    "retries": ("retries", _same, False),
    "max.request.size": ("message.max.bytes", _same, True),  # librdkafka: 1000000
    "buffer.memory": ("queue.buffering.max.kbytes", _kilobytes, True),  # librdkafka: 1 GiB
    # enable.idempotence: see _producer_options (Java turns it off for conflicting settings).
}
_CONSUMER_KEYS: dict[str, tuple[str, Converter, bool]] = {
    "client.id": ("client.id", _same, True),
    # librdkafka's consumer has no per-request timeout; its socket timeout is the nearest.
    "request.timeout.ms": ("socket.timeout.ms", _same, False),
    "group.instance.id": ("group.instance.id", _same, False),
    "auto.offset.reset": ("auto.offset.reset", _offset_reset, True),
    "auto.commit.interval.ms": ("auto.commit.interval.ms", _same, False),
    "isolation.level": ("isolation.level", _same, True),  # librdkafka: read_committed
    "session.timeout.ms": ("session.timeout.ms", _same, False),
    "heartbeat.interval.ms": ("heartbeat.interval.ms", _same, False),
    "max.poll.interval.ms": ("max.poll.interval.ms", _same, False),
    "partition.assignment.strategy": ("partition.assignment.strategy", _assignors, True),
    "fetch.min.bytes": ("fetch.min.bytes", _same, False),
    "fetch.max.bytes": ("fetch.max.bytes", _same, False),
    "fetch.max.wait.ms": ("fetch.wait.max.ms", _same, False),
    "max.partition.fetch.bytes": ("max.partition.fetch.bytes", _same, False),
    "check.crcs": ("check.crcs", _same, True),  # librdkafka: false
    # group.id and enable.auto.commit: see _consumer_options. max.poll.records has no
    # librdkafka key: it is `poll_batch`'s default size, applied here.
}
_ADMIN_KEYS: dict[str, tuple[str, Converter, bool]] = {
    "client.id": ("client.id", _same, True),
    # Also passed as each admin request's timeout.
    "request.timeout.ms": ("socket.timeout.ms", _same, False),
}
_ROLE_KEYS = {Role.PRODUCER: _PRODUCER_KEYS, Role.CONSUMER: _CONSUMER_KEYS, Role.ADMIN: _ADMIN_KEYS}

# librdkafka's smallest `message.max.bytes`.
_LIBRDKAFKA_MIN_MESSAGE_BYTES = 1000
_LIBRDKAFKA_DEFAULT_MESSAGE_BYTES = 1_000_000


def _translate(role: Role, config: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka's settings for our parsed `config` (without callbacks), passthrough last."""
    options: dict[str, Any] = {}
    for key, (native_key, convert, apply_default) in _ROLE_KEYS[role].items():
        if key in config:
            options[native_key] = convert(config[key])
        elif apply_default:
            options[native_key] = convert(KEYS[key].default)
    if role is Role.PRODUCER:
        options.update(_producer_options(config))
    elif role is Role.CONSUMER:
        options.update(_consumer_options(config, options))
    for key, value in config.items():
        if key.startswith(PASSTHROUGH_PREFIX):
            options[key[len(PASSTHROUGH_PREFIX) :]] = value
    if options.get("group.protocol") == "consumer" and not (
        "partition.assignment.strategy" in config
        or f"{PASSTHROUGH_PREFIX}partition.assignment.strategy" in config
    ):
        # KIP-848 groups: the broker assigns; librdkafka refuses a client-side assignor.
        options.pop("partition.assignment.strategy", None)
    return options


def _producer_options(config: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        # Kafka's Java partitioner: murmur2 of the key; keyless records sticky per batch.
        # (librdkafka's default, consistent_random, puts keyed records elsewhere.)
        "partitioner": "murmur2_random",
    }
    if "enable.idempotence" in config:
        options["enable.idempotence"] = config["enable.idempotence"]
    else:
        # Java enables idempotence unless a setting conflicts with it, then quietly doesn't.
        options["enable.idempotence"] = (
            setting(config, "acks") == -1
            and setting(config, "max.in.flight.requests.per.connection") <= 5
            and setting(config, "retries") > 0
        )
    return options


def _consumer_options(config: Mapping[str, Any], translated: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"enable.partition.eof": False}
    group_id = config.get("group.id")
    if group_id is None:
        # librdkafka requires a group id even for assign-only use; this one never commits,
        # and `commit`/`subscribe` refuse without a real group (as the Java consumer does).
        if config.get("enable.auto.commit") is True:
            raise ConfigError("config 'enable.auto.commit' needs a 'group.id'")
        options["group.id"] = f"headwater-no-group-{uuid.uuid4().hex}"
        options["enable.auto.commit"] = False
    else:
        options["group.id"] = group_id
        options["enable.auto.commit"] = setting(config, "enable.auto.commit")
    fetch_max_bytes = translated.get("fetch.max.bytes")
    if fetch_max_bytes is not None and fetch_max_bytes < _LIBRDKAFKA_DEFAULT_MESSAGE_BYTES:
        # librdkafka insists fetch.max.bytes >= message.max.bytes (its request size limit).
        # Like Java's, it still returns a record larger than fetch.max.bytes when it must.
        bound = max(fetch_max_bytes, _LIBRDKAFKA_MIN_MESSAGE_BYTES)
        options["fetch.max.bytes"] = bound
        options["message.max.bytes"] = bound
    return options


T = TypeVar("T")


def _new_handle(factory: Callable[[dict[str, Any]], T], options: dict[str, Any], what: str) -> T:
    """librdkafka's client for `options`; a refused setting becomes `ConfigError`."""
    try:
        return factory(options)
    except KafkaException as exception:
        error = exception.args[0] if exception.args else None
        text = _error_text(error) if isinstance(error, KafkaError) else str(exception)
        raise ConfigError(f"cannot create the {what}: {text}") from None
    except (ValueError, TypeError) as exception:
        raise ConfigError(f"cannot create the {what}: {exception}") from None


# --- small helpers ------------------------------------------------------------------------------


def _native(
    partition: TopicPartition, offset: int = OFFSET_INVALID
) -> confluent_kafka.TopicPartition:
    return confluent_kafka.TopicPartition(partition.topic, partition.partition, offset)


def _ours(native: confluent_kafka.TopicPartition) -> TopicPartition:
    return TopicPartition(native.topic, native.partition)


def _seconds(timeout: float | None) -> float:
    """confluent-kafka's timeout: -1 waits forever."""
    return -1.0 if timeout is None else max(0.0, timeout)


def _header_list(
    headers: Headers | Mapping[str, bytes | None] | None,
) -> list[tuple[str, str | bytes | None]] | None:
    if not headers:
        return None
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _resolved_future(value: T) -> Future[T]:
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()
    future.set_result(value)
    return future


def _running_future() -> Future[Any]:
    """A future the caller cannot cancel (it stands for work librdkafka already has), cheap
    enough to make one per record."""
    return DeliveryFuture()


# --- producer -----------------------------------------------------------------------------------

# librdkafka's default batch.size: how much keyless send_many puts in one partition at a time.
_LIBRDKAFKA_BATCH_BYTES = 1_000_000
# Topics whose partitions a producer keeps for keyless send_many, and how long it trusts them
# (a topic may gain partitions; librdkafka re-reads its metadata on a similar schedule).
_PARTITION_CACHE_TOPICS_MAX = 10_000
_PARTITIONS_REFRESH_S = 30.0
# Types a plain-bytes serializer passes through untouched.
_PLAIN_TYPES = frozenset({bytes, type(None)})


class KafkaProducer(Producer):
    """A librdkafka producer; a daemon thread serves its delivery reports, so futures and
    `on_delivery` callbacks complete without the caller polling."""

    def __init__(
        self,
        bootstrap_servers: str,
        config: Mapping[str, Any],
        *,
        key_serializer: Any = None,
        value_serializer: Any = None,
        on_close: Callable[[object], None] | None = None,
    ) -> None:
        self._key_serializer = resolve_serializer(key_serializer)
        self._value_serializer = resolve_serializer(value_serializer)
        self._plain_keys = passes_bytes(self._key_serializer)
        self._plain_values = passes_bytes(self._value_serializer)
        options = _translate(Role.PRODUCER, config)
        # (librdkafka's message.timeout.ms is the same setting, by its older name.)
        self._delivery_timeout = (
            float(options.get("message.timeout.ms", options["delivery.timeout.ms"])) / 1000
        )
        self._request_timeout = setting(config, "request.timeout.ms") / 1000
        options.update(
            {
                "bootstrap.servers": bootstrap_servers,
                "logger": _librdkafka_logger(),
                "error_cb": self._on_error,
            }
        )
        self._producer = _new_handle(confluent_kafka.Producer, options, "producer")
        self._on_close = on_close
        self._closed = False
        self._close_lock = threading.Lock()
        self._fatal: ClientError | None = None
        # Partition counts of topics sent to with an explicit partition (checked in `send`).
        self._partition_counts: dict[str, int] = {}
        # Keyless send_many: each topic's sticky partitioner, and when to re-read its partitions.
        self._sticky: dict[str, tuple[StickyPartitioner, float]] = {}
        self._run_bytes = (
            int(config["batch.size"]) if "batch.size" in config else _LIBRDKAFKA_BATCH_BYTES
        )
        # Whether a partition's delivery reports follow send order (see _RunReports).
        self._reports_in_order = (
            options.get("enable.idempotence") is True or options.get("max.in.flight") == 1
        )
        self._served = threading.Condition()
        self._sends = 0
        self._served_by_sender_at = 0.0
        self._flushing = 0  # flush calls under way (from any thread; under _callbacks_lock)
        # on_delivery callbacks not run yet: while any is, only the producer's thread serves
        # reports, so a callback never runs inside the send() of a caller holding a lock.
        self._callbacks_due = 0
        self._callbacks_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = threading.Thread(
            target=self._serve, name="headwater-kafka-producer", daemon=True
        )
        self._server.start()

    # --- librdkafka's events ----------------------------------------------------------------

    def _serve(self) -> None:
        """Serve delivery reports until `close`; wakes senders waiting for queue space."""
        while not self._stopping.is_set():
            if self._flushing or time.monotonic() - self._served_by_sender_at < _SENDER_BUSY_S:
                self._stopping.wait(_SENDER_BUSY_S)
                continue
            try:
                served = self._producer.poll(_SERVE_INTERVAL_S)
            except Exception:  # a callback's failure must not stop deliveries
                _log.exception("serving the producer's delivery reports failed")
                continue
            if served:
                with self._served:
                    self._served.notify_all()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = map_error(error, "the producer failed")
            _log.error("producer: %s", _error_text(error))
        else:
            _log.debug("producer: %s", _error_text(error))

    # --- sending ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the producer is closed")
        if self._fatal is not None:
            raise self._fatal

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Headers | Mapping[str, bytes | None] | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> Future[RecordMetadata]:
        if self._closed or self._fatal is not None:
            self._check_open()
        # The common case inline: bytes in, no options; one frame and one future per record.
        if not (self._plain_values and (value is None or type(value) is bytes)):
            value = serialize(self._value_serializer, value, topic, "value")
        if not (self._plain_keys and (key is None or type(key) is bytes)):
            key = serialize(self._key_serializer, key, topic, "key")
        if partition is None and timestamp is None and on_delivery is None and not headers:
            future = _RecordFuture()  # also librdkafka's delivery callback for the record
            try:
                self._producer.produce(topic, value, key, -1, future)
            except (BufferError, KafkaException):
                # A full queue or a refused record: the careful path waits or fails it.
                self._produce(topic, value, key, None, 0, None, future)
            sends = self._sends = self._sends + 1
            if not sends % _SERVE_EVERY_SENDS and not self._callbacks_due:
                self._served_by_sender_at = time.monotonic()
                self._producer.poll(0)
            return future
        return self._send_with_options(
            topic, value, key, partition, timestamp, headers, on_delivery
        )

    def _send_with_options(
        self,
        topic: str,
        value_bytes: bytes | None,
        key_bytes: bytes | None,
        partition: int | None,
        timestamp: int | None,
        headers: Headers | Mapping[str, bytes | None] | None,
        on_delivery: DeliveryCallback | None,
    ) -> Future[RecordMetadata]:
        """`send` with a partition, timestamp, headers or callback: checked, then queued."""
        if partition is not None:
            self._check_partition(topic, partition)
        future = _RecordFuture()
        delivered: Callable[[KafkaError | None, Message], None]
        if on_delivery is None:
            delivered = future
        else:
            with self._callbacks_lock:
                self._callbacks_due += 1
            delivered = functools.partial(self._complete, future, on_delivery, topic)
        stamp = _timestamp(timestamp)
        header_list = _header_list(headers) if headers else None
        try:
            self._produce(topic, value_bytes, key_bytes, partition, stamp, header_list, delivered)
        except BaseException:
            if on_delivery is not None:
                with self._callbacks_lock:
                    self._callbacks_due -= 1
            raise
        self._sent()
        return future

    def _sent(self) -> None:
        """Count a send; now and then serve delivery reports right here (see _SENDER_BUSY_S)."""
        self._sends += 1
        if self._sends % _SERVE_EVERY_SENDS == 0 and not self._callbacks_due:
            self._served_by_sender_at = time.monotonic()
            self._producer.poll(0)

    def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Future[list[RecordMetadata]]:
        self._check_open()
        # Busy from now: the producer's thread keeps out of librdkafka while this call queues
        # (and serves) its records, rather than take turns with it at the GIL.
        self._served_by_sender_at = time.monotonic()
        if not isinstance(values, list | tuple):
            values = list(values)
        if keys is not None and not isinstance(keys, list | tuple):
            keys = list(keys)
        if keys is not None and len(keys) != len(values):
            raise ValueError(f"send_many got {len(values)} values but {len(keys)} keys")
        # Serialized up front, so a bad value fails the call before any record is queued; plain
        # bytes (the bulk case) are checked by type in one C-level pass instead.
        value_list: Sequence[bytes | None] = values
        if not (self._plain_values and set(map(type, values)) <= _PLAIN_TYPES):
            value_list = [
                serialize(self._value_serializer, value, topic, "value") for value in values
            ]
        key_list: Sequence[bytes | None] | None = keys
        if keys is not None and not (self._plain_keys and set(map(type, keys)) <= _PLAIN_TYPES):
            key_list = [serialize(self._key_serializer, key, topic, "key") for key in keys]
        if partition is not None:
            self._check_partition(topic, partition)
        if not value_list:
            return _resolved_future([])
        stamp = _timestamp(timestamp)
        if key_list is None and self._reports_in_order:
            runs = self._keyless_runs(topic, value_list, partition)
            if runs is not None:
                return self._send_runs(topic, value_list, runs, stamp)
        return self._send_each(topic, value_list, key_list, partition, stamp)

    def _keyless_runs(
        self, topic: str, values: Sequence[bytes | None], partition: int | None
    ) -> list[tuple[int, int, int]] | None:
        """Where keyless records go, as runs of (partition, start, stop) in send order: the
        given partition, or Kafka's sticky partitioner moving on after each `batch.size` worth
        of records. None when the topic's partitions cannot be read (librdkafka decides)."""
        count = len(values)
        if partition is not None:
            return [(partition, 0, count)]
        now = time.monotonic()
        planned = self._sticky.get(topic)
        if planned is None or now >= planned[1]:
            try:
                partition_count = len(self.partitions_for(topic))
            except ClientError:
                return None
            sticky = planned[0] if planned is not None else None
            if sticky is None or sticky.partition_count != partition_count:
                sticky = StickyPartitioner(partition_count)
            if len(self._sticky) > _PARTITION_CACHE_TOPICS_MAX:
                self._sticky.clear()  # a cache, refilled on demand
            planned = self._sticky[topic] = (sticky, now + _PARTITIONS_REFRESH_S)
        sticky = planned[0]
        try:
            total_bytes = sum(map(len, values))  # type: ignore[arg-type]
        except TypeError:  # tombstones among them
            total_bytes = sum(len(value) for value in values if value is not None)
        run_records = max(1, self._run_bytes * count // max(1, total_bytes))
        runs = []
        for start in range(0, count, run_records):
            stop = min(count, start + run_records)
            runs.append((sticky.partition(), start, stop))
            if stop - start == run_records:
                sticky.next_batch()
        return runs

    def _send_runs(
        self,
        topic: str,
        values: Sequence[bytes | None],
        runs: list[tuple[int, int, int]],
        stamp: int,
    ) -> Future[list[RecordMetadata]]:
        """Queue keyless records run by run, with one delivery callback for all of them: no
        Python object per record, which is most of what a record would cost otherwise."""
        reports = _RunReports(topic, len(values), runs)
        report = reports.report  # bound once: a method is cheaper for librdkafka to call
        produce = self._producer.produce
        index = 0
        try:
            for partition, start, stop in runs:
                for index in range(start, stop):
                    value = values[index]
                    try:
                        if stamp:
                            produce(topic, value, None, partition, report, timestamp=stamp)
                        else:
                            produce(topic, value, None, partition, report)
                    except (BufferError, KafkaException):
                        # A full queue or a refused record: the careful path waits or fails it.
                        self._produce(topic, value, None, partition, stamp, None, report)
                index = stop
        except BaseException as exception:
            reports.abandon(len(values) - index, exception)
            raise
        finally:
            self._sent_many(index)
        return reports.future

    def _send_each(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        partition: int | None,
        stamp: int,
    ) -> Future[list[RecordMetadata]]:
        """Queue records with a delivery callback each (keyed records: librdkafka partitions
        them by murmur2, so only their own reports say where they went)."""
        batch = _BatchDelivery(len(values), topic)
        target = -1 if partition is None else partition
        produce = self._producer.produce
        report = batch.delivered
        partial = functools.partial
        keys_in_order = keys if keys is not None else [None] * len(values)
        queued = 0
        try:
            for key_bytes, value_bytes in zip(keys_in_order, values, strict=True):
                callback = partial(report, queued)
                try:
                    produce(
                        topic, value_bytes, key_bytes, target, on_delivery=callback, timestamp=stamp
                    )
                except (BufferError, KafkaException):
                    self._produce(topic, value_bytes, key_bytes, partition, stamp, None, callback)
                queued += 1
        except BaseException as exception:
            batch.abandon(len(values) - queued, exception)
            raise
        finally:
            self._sent_many(queued)
        return batch.future

    def _sent_many(self, count: int) -> None:
        """Count sends; serve the reports that are ready right here (see _SENDER_BUSY_S)."""
        self._sends += count
        if not self._callbacks_due:
            self._served_by_sender_at = time.monotonic()
            self._producer.poll(0)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        timestamp: int,
        headers: list[tuple[str, str | bytes | None]] | None,
        delivered: Callable[[KafkaError | None, Message], None],
    ) -> None:
        """Queue one record; a full queue waits for acknowledgements (up to the delivery
        timeout, as Java's `max.block.ms` does), then fails the record."""
        waited_since: float | None = None
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    -1 if partition is None else partition,
                    on_delivery=delivered,
                    timestamp=timestamp,
                    headers=headers,
                )
                return
            except BufferError:
                now = time.monotonic()
                if waited_since is None:
                    waited_since = now
                elif now - waited_since >= self._delivery_timeout:
                    error = KafkaError(
                        KafkaError._QUEUE_FULL,
                        f"the send buffer stayed full for {self._delivery_timeout:.0f} s "
                        "(buffer.memory)",
                    )
                    delivered(
                        error,
                        Message(topic=topic, partition=-1 if partition is None else partition),
                    )
                    return
                if self._closed:
                    raise ClientClosedError("the producer is closed") from None
                if self._callbacks_due:
                    with self._served:
                        self._served.wait(0.05)
                else:
                    self._served_by_sender_at = now
                    self._producer.poll(0.05)
            except KafkaException as exception:
                code = _code_of(exception)
                if code == KafkaError._UNKNOWN_PARTITION and partition is not None:
                    raise UnknownTopicOrPartitionError(
                        f"topic {topic!r} has no partition {partition}",
                        error_code=3,
                        retriable=True,
                    ) from None
                # Refused before queueing (too large, ...): the future fails, as in Java.
                error = exception.args[0]
                delivered(
                    error, Message(topic=topic, partition=-1 if partition is None else partition)
                )
                return

    def _complete(
        self,
        future: _RecordFuture,
        on_delivery: DeliveryCallback,
        topic: str,
        error: KafkaError | None,
        message: Message,
    ) -> None:
        """A report for a record with an `on_delivery` callback: the callback, then the future."""
        metadata, failure = _outcome(error, message, topic)
        try:
            on_delivery(metadata, failure)
        except Exception:
            _log.exception("an on_delivery callback failed")
        finally:
            with self._callbacks_lock:
                self._callbacks_due -= 1
        future.settle(metadata, failure)

    def _check_partition(self, topic: str, partition: int) -> None:
        """Refuse an explicit partition the topic does not have, before queueing."""
        if partition < 0:
            raise UnknownTopicOrPartitionError(
                f"partition {partition} of topic {topic!r} is invalid", error_code=3
            )
        count = self._partition_counts.get(topic)
        if count is None or partition >= count:
            count = len(self.partitions_for(topic))
        if partition >= count:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has no partition {partition} (it has {count})",
                error_code=3,
                retriable=True,
            )

    def partitions_for(self, topic: str) -> list[int]:
        self._check_open()
        deadline = time.monotonic() + self._request_timeout
        while True:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                metadata = self._producer.list_topics(topic, timeout=remaining)
            except KafkaException as exception:
                raise _from_exception(exception, f"cannot read topic {topic!r}") from None
            described = metadata.topics.get(topic)
            error = described.error if described is not None else None
            if described is not None and error is None and described.partitions:
                partitions = sorted(described.partitions)
                if len(self._partition_counts) > 10_000:
                    self._partition_counts.clear()  # bounded: a cache, refilled on demand
                self._partition_counts[topic] = len(partitions)
                return partitions
            if error is not None and error.code() not in (
                KafkaError.LEADER_NOT_AVAILABLE,  # being auto-created
                KafkaError._UNKNOWN_TOPIC,
            ):
                raise map_error(error, f"cannot read topic {topic!r}")
            if time.monotonic() >= deadline:
                if error is not None:
                    raise map_error(error, f"cannot read topic {topic!r}")
                raise KafkaTimeoutError(f"topic {topic!r} has no partitions yet")
            time.sleep(0.05)

    def flush(self, timeout: float | None = None) -> int:
        self._check_open()
        # librdkafka's flush serves the reports itself: the producer's thread keeps out of it
        # meanwhile (two threads serving reports take turns at the GIL per report).
        with self._callbacks_lock:
            self._flushing += 1
        try:
            return self._producer.flush(_seconds(timeout))
        finally:
            with self._callbacks_lock:
                self._flushing -= 1
            self._served_by_sender_at = time.monotonic()

    def close(self, timeout: float | None = None) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            left = self._producer.flush(_seconds(timeout))
            if left:
                # Out of time: fail what is left rather than leave futures hanging.
                self._producer.purge(in_queue=True, in_flight=True, blocking=False)
                self._producer.flush(1.0)
        finally:
            self._stopping.set()
            if threading.current_thread() is not self._server:  # not from a callback
                self._server.join()
            self._producer.poll(0)
            if self._on_close is not None:
                self._on_close(self)


def _timestamp(timestamp: int | None) -> int:
    """librdkafka's timestamp argument: 0 stamps the current time."""
    if timestamp is None:
        return 0
    if timestamp < 0:
        raise ValueError(f"a record timestamp must not be negative, not {timestamp}")
    return timestamp


def _outcome(
    error: KafkaError | None, message: Message, topic: str
) -> tuple[RecordMetadata | None, ClientError | None]:
    """The metadata or the error a delivery report stands for."""
    if error is not None:
        partition = message.partition()
        where = f"{topic}/{partition}" if partition is not None and partition >= 0 else topic
        return None, map_error(error, f"cannot deliver a record to {where}")
    return _metadata(message, topic), None


class _RecordFuture(DeliveryFuture[RecordMetadata]):
    """The future of one `send`, and librdkafka's delivery callback for it: holds the delivered
    message and makes its `RecordMetadata` only when someone asks (most senders never look)."""

    _built: RecordMetadata | None = None

    __call__ = DeliveryFuture._report  # librdkafka's delivery report for this record

    def _failed(self, error: KafkaError, message: Message) -> None:
        self.set_exception(_outcome(error, message, message.topic() or "")[1])

    def settle(self, metadata: RecordMetadata | None, failure: ClientError | None) -> None:
        """Complete with an outcome already made (a callback needed it first)."""
        if failure is not None or metadata is None:
            self.set_exception(failure or ClientError("a delivery report without an outcome"))
        else:
            self._built = metadata
            self.set_result(metadata)

    def result(self, timeout: float | None = None) -> RecordMetadata:
        built = self._built
        if built is None:
            message: Message = super().result(timeout)  # type: ignore[assignment]
            built = self._built = _metadata(message, "")
        return built


class _BatchFuture(DeliveryFuture[list[RecordMetadata]]):
    """The future of a `send_many`: complete when every record is reported, it turns their
    messages into `RecordMetadata` only when someone asks (most bulk senders only flush)."""

    _built: list[RecordMetadata] | None = None

    def __init__(self, build: Callable[[], list[RecordMetadata]]) -> None:
        self._build = build

    def result(self, timeout: float | None = None) -> list[RecordMetadata]:
        built = self._built
        if built is None:
            super().result(timeout)  # raises the failure, if any
            built = self._built = self._build()
        return built


def _metadata(message: Message, topic: str) -> RecordMetadata:
    kind, stamp = message.timestamp()
    offset = message.offset()
    partition = message.partition()
    return RecordMetadata(
        message.topic() or topic,
        partition if partition is not None else -1,
        offset if offset is not None and offset >= 0 else -1,
        stamp if kind != confluent_kafka.TIMESTAMP_NOT_AVAILABLE else -1,
    )


class _Reports:
    """One future for the records of a `send_many`: done when each is reported (or given up),
    failed by the first failure. Reports may come from two polling threads at once, so the
    count is an atomic counter and each report writes once."""

    __slots__ = ("_count", "_done", "_failure", "_topic", "future")

    def __init__(self, topic: str, count: int) -> None:
        self.future = _BatchFuture(self._metadata)
        self._topic = topic
        self._count = count
        self._done = itertools.count(1)
        self._failure: BaseException | None = None

    def _counted(self, error: KafkaError | None, message: Message) -> None:
        """Count one report (a failure remembered); the last completes the future."""
        if error is not None and self._failure is None:
            self._failure = _outcome(error, message, self._topic)[1]
        if next(self._done) == self._count:
            _finish(self.future, self._failure)

    def abandon(self, count: int, failure: BaseException) -> None:
        """`count` records were never queued (the call raised): the future fails once the
        queued ones are reported, rather than waiting for ever."""
        if self._failure is None:
            self._failure = failure
        for _ in range(count):
            if next(self._done) == self._count:
                _finish(self.future, self._failure)

    def _metadata(self) -> list[RecordMetadata]:
        raise NotImplementedError


# A collector keeps where each reported record landed as three ints in one flat list
# (partition, offset, timestamp), never librdkafka's `Message`s or a tuple per record: those are
# tracked by the garbage collector and live until the metadata is asked for, so a call's
# thousands of them made collections cost more than queueing the records did. Ints are not
# tracked, and the tuples the reports build are freed at once.
_PLACED_FIELDS = 3
_NO_TIMESTAMP = confluent_kafka.TIMESTAMP_NOT_AVAILABLE
_Landed = tuple[int | None, int | None, int]  # partition, offset, timestamp (-1: none)


def _landed(placed: list[int | None]) -> Iterator[_Landed]:
    """The (partition, offset, timestamp) triples of a flat list of them."""
    fields = iter(placed)
    return zip(fields, fields, fields, strict=True)  # type: ignore[arg-type]


def _landed_metadata(topic: str, landed: _Landed) -> RecordMetadata:
    partition, offset, stamp = landed
    return RecordMetadata(
        topic,
        -1 if partition is None else partition,
        -1 if offset is None or offset < 0 else offset,  # none known with acks=0
        stamp,
    )


class _BatchDelivery(_Reports):
    """A callback per record (`delivered` with its index): each report files where its record
    landed in the record's slots, so the metadata comes in send order as it is."""

    __slots__ = ("_placed",)

    def __init__(self, count: int, topic: str) -> None:
        super().__init__(topic, count)
        self._placed: list[int | None] = [None] * (count * _PLACED_FIELDS)

    def delivered(self, index: int, error: KafkaError | None, message: Message) -> None:
        if error is None:
            kind, stamp = message.timestamp()
            first = index * _PLACED_FIELDS
            self._placed[first : first + _PLACED_FIELDS] = (  # one atomic write
                message.partition(),
                message.offset(),
                stamp if kind != _NO_TIMESTAMP else -1,
            )
            if next(self._done) == self._count:  # `_counted`, inline on the hot path
                _finish(self.future, self._failure)
        else:
            self._counted(error, message)

    def _metadata(self) -> list[RecordMetadata]:
        # Built only for a future that succeeded: every record was reported.
        topic = self._topic
        return [_landed_metadata(topic, landed) for landed in _landed(self._placed)]


class _RunReports(_Reports):
    """The one delivery callback of a keyless `send_many`, whose records went out in runs of
    known partitions (see `KafkaProducer._keyless_runs`).

    Reports only append where their record landed (one atomic `extend`). The metadata is
    matched to records when asked for: within a partition the offsets follow send order, which
    librdkafka keeps when idempotent or with one request in flight, the only producers this is
    used for.
    """

    __slots__ = ("_placed", "_runs")

    def __init__(self, topic: str, count: int, runs: list[tuple[int, int, int]]) -> None:
        super().__init__(topic, count)
        self._runs = runs
        self._placed: list[int | None] = []

    def report(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery report for one of the records."""
        if error is None:
            kind, stamp = message.timestamp()
            self._placed.extend(
                (message.partition(), message.offset(), stamp if kind != _NO_TIMESTAMP else -1)
            )
            if next(self._done) == self._count:  # `_counted`, inline on the hot path
                _finish(self.future, self._failure)
        else:
            self._counted(error, message)

    def _metadata(self) -> list[RecordMetadata]:
        placed = self._placed
        reported: dict[int | None, list[_Landed]] = {}
        for landed in _landed(placed):
            reported.setdefault(landed[0], []).append(landed)
        for in_partition in reported.values():
            # Stable: unknown offsets (acks=0) keep the order of the reports.
            in_partition.sort(key=_offset_of)
        used = dict.fromkeys(reported, 0)
        topic = self._topic
        built: list[RecordMetadata] = []
        for partition, start, stop in self._runs:
            in_partition = reported.get(partition, [])
            first = used.get(partition, 0)
            last = used[partition] = first + stop - start
            invariant(last <= len(in_partition), "a report for every record of the run")
            built.extend(_landed_metadata(topic, landed) for landed in in_partition[first:last])
        invariant(
            len(built) == self._count == len(placed) // _PLACED_FIELDS, "one report per record"
        )
        return built


def _offset_of(landed: _Landed) -> int:
    offset = landed[1]
    return -1 if offset is None else offset


def _finish(future: _BatchFuture, failure: BaseException | None) -> None:
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result([])  # the metadata is built on demand


# --- consumer -----------------------------------------------------------------------------------


_tuple_new = tuple.__new__  # builds a ConsumerRecord from its fields, without keyword handling
_LOG_APPEND_TIME = confluent_kafka.TIMESTAMP_LOG_APPEND_TIME


class _CommitRequest(NamedTuple):
    offsets: list[confluent_kafka.TopicPartition]
    future: Future[dict[TopicPartition, int]]


class KafkaConsumer(Consumer):
    """A librdkafka consumer that behaves as Kafka's Java consumer where they differ."""

    def __init__(
        self,
        bootstrap_servers: str,
        config: Mapping[str, Any],
        *,
        key_deserializer: Any = None,
        value_deserializer: Any = None,
        on_close: Callable[[object], None] | None = None,
    ) -> None:
        self._key_deserializer = resolve_deserializer(key_deserializer)
        self._value_deserializer = resolve_deserializer(value_deserializer)
        self._raw_keys = is_identity(self._key_deserializer)
        self._raw_values = is_identity(self._value_deserializer)
        self._group_id: str | None = config.get("group.id")
        self._offset_reset: str = setting(config, "auto.offset.reset")
        self._max_poll_records: int = setting(config, "max.poll.records")
        self._request_timeout: float = setting(config, "request.timeout.ms") / 1000
        options = _translate(Role.CONSUMER, config)
        # Cooperative rebalancing (and KIP-848 groups) change the assignment incrementally;
        # librdkafka refuses the other kind of call.
        self._incremental = (
            "cooperative-sticky" in str(options.get("partition.assignment.strategy", ""))
            or options.get("group.protocol") == "consumer"
        )
        options.update(
            {
                "bootstrap.servers": bootstrap_servers,
                "logger": _librdkafka_logger(),
                "error_cb": self._on_error,
            }
        )
        self._consumer = _new_handle(confluent_kafka.Consumer, options, "consumer")
        self._on_close = on_close
        self._closing = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._fatal: ClientError | None = None
        self._subscribed = False
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._on_lost: RebalanceCallback | None = None
        # Where assigned partitions start or were sought to, until a record from them is
        # returned: librdkafka reports no position until then. Offsets may be logical.
        self._starts: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        # An error met in the middle of a batch, raised by the next `poll`/`poll_batch`.
        self._pending_error: ClientError | None = None
        # Asynchronous commits, made in order by a thread of their own (started on first use):
        # librdkafka would acknowledge them only inside poll(), and a caller waiting on the
        # future without polling would wait forever.
        self._commit_requests: queue.Queue[_CommitRequest | None] = queue.Queue(
            _MAX_PENDING_COMMITS
        )
        self._committer: threading.Thread | None = None
        self._in_callback = 0  # > 0 while a rebalance callback runs (inside librdkafka's poll)

    # --- librdkafka's events ----------------------------------------------------------------

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = map_error(error, "the consumer failed")
            _log.error("consumer: %s", _error_text(error))
        else:
            _log.debug("consumer: %s", _error_text(error))

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        if self._fatal is not None:
            raise self._fatal

    def _check_group(self, what: str) -> None:
        if self._group_id is None:
            raise ConfigError(f"{what} needs a 'group.id'")

    # --- membership -------------------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str] | str,
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        self._check_open()
        self._check_group("subscribe()")
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names:
            self.unsubscribe()
            return
        if not self._subscribed and self._consumer.assignment():
            raise ClientError("subscribe() after assign(): assign([]) first")
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        try:
            self._consumer.subscribe(
                names, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
            )
        except KafkaException as exception:
            raise _from_exception(exception, "cannot subscribe") from None
        self._subscribed = True

    def _assigned(
        self, _consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        """Assign first, then tell the application: its `on_assign` may seek or read
        positions (librdkafka would assign only after the callback returns)."""
        if self._incremental:
            self._consumer.incremental_assign(partitions)
        else:
            self._consumer.assign(partitions)
            self._starts.clear()
            self._paused.clear()
        if self._on_assign is not None:
            self._in_callback += 1
            try:
                self._on_assign(self, [_ours(item) for item in partitions])
            finally:
                self._in_callback -= 1

    def _revoked(
        self, _consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        self._give_up(partitions, self._on_revoke)

    def _lost(
        self, _consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        # As in Java, partitions lost without an on_lost callback go to on_revoke.
        self._give_up(partitions, self._on_lost or self._on_revoke)

    def _give_up(
        self,
        partitions: list[confluent_kafka.TopicPartition],
        callback: RebalanceCallback | None,
    ) -> None:
        """Tell the application (it may still commit), then let the partitions go."""
        ours = [_ours(item) for item in partitions]
        self._in_callback += 1
        try:
            if callback is not None:
                callback(self, ours)
        finally:
            self._in_callback -= 1
            for partition in ours:
                self._starts.pop(partition, None)
                self._paused.discard(partition)
            self._drop_pending_error(set(ours))
            if self._incremental:
                self._consumer.incremental_unassign(partitions)
            else:
                self._consumer.unassign()

    def unsubscribe(self) -> None:
        self._check_open()
        if not self._subscribed:
            return
        try:
            self._consumer.unsubscribe()
        except KafkaException as exception:
            raise _from_exception(exception, "cannot unsubscribe") from None
        self._subscribed = False
        # librdkafka revokes on a later poll; Java's unsubscribe revokes before it returns, and
        # an assign() made in between would be undone by that late revoke. Records fetched for
        # the old assignment are dropped, as Java drops them.
        deadline = time.monotonic() + _REVOKE_WAIT_S
        while self._consumer.assignment() and time.monotonic() < deadline:
            self._consumer.poll(0.05)
        self._starts.clear()
        self._paused.clear()
        self._pending_error = None

    def assign(self, partitions: Sequence[TopicPartition] | Mapping[TopicPartition, int]) -> None:
        self._check_open()
        if self._subscribed:
            raise ClientError("assign() while subscribed: unsubscribe() first")
        starts: dict[TopicPartition, int | None]
        if isinstance(partitions, Mapping):
            starts = {
                TopicPartition(*partition): offset for partition, offset in partitions.items()
            }
        else:
            starts = dict.fromkeys((TopicPartition(*partition) for partition in partitions), None)
        default = self._default_start()
        native = [
            _native(partition, default if offset is None else offset)
            for partition, offset in starts.items()
        ]
        try:
            if native:
                self._consumer.assign(native)
            else:
                self._consumer.unassign()
        except KafkaException as exception:
            raise _from_exception(exception, "cannot assign") from None
        self._starts = {
            partition: offset for partition, offset in starts.items() if offset is not None
        }
        kept = self._paused & starts.keys()
        self._paused = set()
        if kept:
            self.pause(sorted(kept))
        self._drop_pending_error(None)

    def _default_start(self) -> int:
        """Where an assigned partition without an offset starts: the group's committed offset
        (librdkafka looks it up), else auto.offset.reset; without a group, the reset directly."""
        if self._group_id is not None or self._offset_reset == "none":
            return OFFSET_INVALID
        return OFFSET_BEGINNING if self._offset_reset == "earliest" else OFFSET_END

    def assignment(self) -> set[TopicPartition]:
        self._check_open()
        return {_ours(item) for item in self._consumer.assignment()}

    # --- reading ----------------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> ConsumerRecord | None:
        self._raise_pending()
        message = self._next_message(timeout)
        return None if message is None else self._record(message)

    def poll_batch(
        self, max_records: int | None = None, timeout: float | None = None
    ) -> list[ConsumerRecord]:
        wanted = self._max_poll_records if max_records is None else max_records
        if wanted < 1:
            raise ValueError(f"max_records must be at least 1, not {wanted}")
        self._raise_pending()
        first = self._next_message(timeout)
        if first is None:
            return []
        messages = [first]
        if wanted > 1:
            # Whatever has arrived already; librdkafka's consume() would wait for a full batch.
            messages.extend(self._consumer.consume(wanted - 1, 0))
        records = self._records(messages)
        if len(records) < len(messages):
            # A consumer error or a bad payload: deliver what came before it; it is raised now
            # (nothing before it) or by the next call, and the rest is read again later.
            index = len(records)
            try:
                self._slow_record(messages[index])
            except ClientError as failure:
                self._rewind(messages[index + 1 :])
                if not records:
                    raise
                self._pending_error = failure
                return records
            records.extend(self._rest_of_batch(messages[index + 1 :]))
        return records

    def _rest_of_batch(self, messages: Sequence[Message]) -> list[ConsumerRecord]:
        """`messages` after a skipped consumer event, converted the same careful way."""
        records: list[ConsumerRecord] = []
        for index, message in enumerate(messages):
            try:
                record = self._slow_record(message)
            except ClientError as failure:
                self._rewind(messages[index + 1 :])
                self._pending_error = failure
                break
            if record is not None:
                records.append(record)
        return records

    def _slow_record(self, message: Message) -> ConsumerRecord | None:
        """One message the fast loop stopped at: an event (None, or raised) or a record."""
        error = message.error()
        if error is not None:
            self._consumer_error(error, message)
            return None
        return self._record(message)

    def _records(self, messages: Sequence[Message]) -> list[ConsumerRecord]:
        """The records of `messages` up to the first that is not a plain, decodable record.

        The hot path of every poll: one loop with everything bound locally, deserializers
        called only when set, and the start-position bookkeeping done once per partition.
        """
        records: list[ConsumerRecord] = []
        append = records.append
        new = _tuple_new
        record_type = ConsumerRecord
        log_append_time = _LOG_APPEND_TIME
        raw_keys, raw_values = self._raw_keys, self._raw_values
        key_deserializer, value_deserializer = self._key_deserializer, self._value_deserializer
        seen: set[tuple[str, int]] = set()
        starts = bool(self._starts)  # start positions still to forget (rare: after assign)
        for message in messages:
            if message.error() is not None:
                break
            topic: str = message.topic()  # type: ignore[assignment]  # a record has all three
            partition: int = message.partition()  # type: ignore[assignment]
            offset: int = message.offset()  # type: ignore[assignment]
            kind, stamp = message.timestamp()
            key = message.key()
            value = message.value()
            try:
                if not raw_keys:
                    key = deserialize(key_deserializer, key, topic, partition, offset, "key")
                if not raw_values:
                    value = deserialize(
                        value_deserializer,
                        value,
                        topic,
                        partition,
                        offset,
                        "value",
                    )
            except ClientError:
                break  # `_slow_record` raises it again, with the records before it delivered
            headers = message.headers()
            if starts:
                seen.add((topic, partition))
            append(
                new(
                    record_type,
                    (
                        topic,
                        partition,
                        offset,
                        stamp,
                        key,
                        value,
                        tuple(headers) if headers else (),
                        kind == log_append_time,
                    ),
                )
            )
        if self._starts:
            for topic, partition in seen:
                self._starts.pop(TopicPartition(topic, partition), None)
        return records

    def _raise_pending(self) -> None:
        self._check_open()
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error

    def _next_message(self, timeout: float | None) -> Message | None:
        """The next record's message within `timeout`; consumer events are skipped or raised."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._closing or self._closed:
                return None  # closed from another thread while waiting
            wait = _POLL_SLICE_S
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            try:
                message = self._consumer.poll(wait)
            except RuntimeError:
                if self._closing or self._closed:
                    return None
                raise
            if self._fatal is not None:
                raise self._fatal
            if message is not None:
                error = message.error()
                if error is None:
                    return message
                self._consumer_error(error, message)
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _consumer_error(self, error: KafkaError, message: Message) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return
        topic, partition = message.topic(), message.partition()
        where = f"{topic}/{partition}" if topic and partition is not None and partition >= 0 else ""
        if error.fatal() or code in _RAISED_CONSUMER_CODES:
            raise map_error(error, f"cannot consume {where}" if where else "cannot consume")
        _log.debug("consumer %s: %s", where, _error_text(error))

    def _record(self, message: Message) -> ConsumerRecord:
        """The record `message` holds, deserialized (the hot path of every poll)."""
        topic: str = message.topic()  # type: ignore[assignment]  # a record has all three
        partition: int = message.partition()  # type: ignore[assignment]
        offset: int = message.offset()  # type: ignore[assignment]
        if self._starts:
            self._starts.pop(TopicPartition(topic, partition), None)
        kind, stamp = message.timestamp()
        key: Any = message.key()
        if not self._raw_keys:
            key = deserialize(self._key_deserializer, key, topic, partition, offset, "key")
        value: Any = message.value()
        if not self._raw_values:
            value = deserialize(self._value_deserializer, value, topic, partition, offset, "value")
        headers = message.headers()
        return _tuple_new(
            ConsumerRecord,
            (
                topic,
                partition,
                offset,
                stamp,
                key,
                value,
                tuple(headers) if headers else (),
                kind == _LOG_APPEND_TIME,
            ),
        )

    def _rewind(self, messages: Sequence[Message]) -> None:
        """Seek back to the first of `messages` in each partition: they were taken from
        librdkafka but not delivered."""
        firsts: dict[TopicPartition, int] = {}
        for message in messages:
            topic, number, offset = message.topic(), message.partition(), message.offset()
            if message.error() is None and topic and number is not None and offset is not None:
                firsts.setdefault(TopicPartition(topic, number), offset)
        for partition, start in firsts.items():
            self._seek(partition, start)

    def _drop_pending_error(self, partitions: set[TopicPartition] | None) -> None:
        """Forget a stashed deserialization error for partitions sought or given up (all:
        None)."""
        error = self._pending_error
        if isinstance(error, DeserializationError) and (
            partitions is None or TopicPartition(error.topic, error.partition) in partitions
        ):
            self._pending_error = None

    # --- positions --------------------------------------------------------------------------

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._check_open()
        partition = TopicPartition(*partition)
        if partition not in self.assignment():
            raise ClientError(f"cannot seek {partition.topic}/{partition.partition}: not assigned")
        self._seek(partition, offset)
        self._drop_pending_error({partition})

    def _seek(self, partition: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(_native(partition, offset))
        except KafkaException as exception:
            if _code_of(exception) != KafkaError._STATE:
                raise _from_exception(
                    exception, f"cannot seek {partition.topic}/{partition.partition}"
                ) from None
            # Assigned but not fetching yet: librdkafka only takes a start offset by assign.
            self._restart({partition: offset})
        self._starts[partition] = offset

    def _restart(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Assign `offsets`' partitions again, starting at those offsets."""
        native = [_native(partition, offset) for partition, offset in offsets.items()]
        try:
            if self._incremental or not self._subscribed:
                self._consumer.incremental_unassign(native)
                self._consumer.incremental_assign(native)
            else:
                # An eager group takes only whole assignments: keep the others where they are.
                known = self._known_positions(self.assignment())
                self._consumer.assign(
                    [
                        _native(
                            partition, offsets.get(partition, known.get(partition, OFFSET_INVALID))
                        )
                        for partition in sorted(known.keys() | offsets.keys())
                    ]
                )
        except KafkaException as exception:
            raise _from_exception(exception, "cannot seek") from None
        paused = [_native(partition) for partition in self._paused]
        if paused:
            self._consumer.pause(paused)

    def seek_to_beginning(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        for partition in self._chosen(partitions):
            self.seek(partition, OFFSET_BEGINNING)

    def seek_to_end(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        for partition in self._chosen(partitions):
            self.seek(partition, OFFSET_END)

    def _chosen(self, partitions: Sequence[TopicPartition] | None) -> list[TopicPartition]:
        self._check_open()
        if partitions is None:
            return sorted(self.assignment())
        return [TopicPartition(*partition) for partition in partitions]

    def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        self._check_open()
        if not timestamps:
            return {}
        native = [_native(TopicPartition(*key), stamp) for key, stamp in timestamps.items()]
        try:
            found = self._consumer.offsets_for_times(native, timeout=self._request_timeout)
        except KafkaException as exception:
            raise _from_exception(exception, "cannot look up offsets by time") from None
        _check_partition_errors(found, "cannot look up offsets by time in")
        return {_ours(item): item.offset if item.offset >= 0 else None for item in found}

    def position(
        self, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        self._check_open()
        assigned = self.assignment()
        chosen = [partition for partition in self._chosen(partitions) if partition in assigned]
        known = self._checked_positions(chosen)
        unresolved = [partition for partition, offset in known.items() if offset < 0]
        if unresolved:
            resolved = self._resolve(unresolved, known)
            for partition, offset in resolved.items():
                # Pin it: a later reset must not move the position the caller was told.
                self._seek(partition, offset)
            known.update(resolved)
        return known

    def _checked_positions(
        self, partitions: Sequence[TopicPartition] | set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """`_known_positions`, where a sought or starting offset outside the log is replaced by
        where auto.offset.reset takes the partition (and pinned there): librdkafka resets it
        quietly and reports no position until a record comes."""
        positions = self._known_positions(partitions)
        if self._offset_reset == "none":
            return positions  # poll raises instead
        for partition, offset in positions.items():
            if offset >= 0 and partition in self._starts:
                low, high = self.watermarks(partition)
                if not low <= offset <= high:
                    reset = low if self._offset_reset == "earliest" else high
                    self._seek(partition, reset)
                    positions[partition] = reset
        return positions

    def _known_positions(
        self, partitions: Sequence[TopicPartition] | set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """librdkafka's positions, with sought and starting offsets it does not report yet."""
        if not partitions:
            return {}
        native = self._consumer.position([_native(partition) for partition in partitions])
        positions: dict[TopicPartition, int] = {}
        for item in native:
            partition = _ours(item)
            positions[partition] = self._starts.get(partition, item.offset)
        return positions

    def _resolve(
        self, partitions: list[TopicPartition], known: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Where each partition will start: a logical offset by the watermarks, else the
        committed offset, else auto.offset.reset (as Java's `position` works it out)."""
        resolved: dict[TopicPartition, int] = {}
        needing_commit = [p for p in partitions if known[p] not in (OFFSET_BEGINNING, OFFSET_END)]
        committed = (
            self.committed(needing_commit) if needing_commit and self._group_id is not None else {}
        )
        for partition in partitions:
            offset = known[partition]
            if offset == OFFSET_BEGINNING:
                resolved[partition] = self.watermarks(partition)[0]
            elif offset == OFFSET_END:
                resolved[partition] = self.watermarks(partition)[1]
            elif committed.get(partition) is not None:
                resolved[partition] = committed[partition]  # type: ignore[assignment]
            elif self._offset_reset == "earliest":
                resolved[partition] = self.watermarks(partition)[0]
            elif self._offset_reset == "latest":
                resolved[partition] = self.watermarks(partition)[1]
            else:
                raise OffsetOutOfRangeError(
                    f"no committed offset for {partition.topic}/{partition.partition} "
                    "and auto.offset.reset is none",
                    error_code=1,
                )
        return resolved

    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        self._check_open()
        partition = TopicPartition(*partition)
        try:
            low, high = self._consumer.get_watermark_offsets(
                _native(partition), timeout=self._request_timeout, cached=False
            )
        except KafkaException as exception:
            raise _from_exception(
                exception, f"cannot read the offsets of {partition.topic}/{partition.partition}"
            ) from None
        return int(low), int(high)

    # --- offsets ----------------------------------------------------------------------------

    def commit(
        self,
        offsets: Mapping[TopicPartition, int] | None = None,
        *,
        asynchronous: bool = False,
    ) -> Future[dict[TopicPartition, int]] | None:
        self._check_open()
        self._check_group("commit()")
        if offsets is None:
            chosen = {
                partition: offset
                for partition, offset in self._checked_positions(self.assignment()).items()
                if offset >= 0
            }
        else:
            chosen = {TopicPartition(*partition): offset for partition, offset in offsets.items()}
        if not chosen:
            return _resolved_future({}) if asynchronous else None
        native = [_native(partition, offset) for partition, offset in chosen.items()]
        if asynchronous:
            future: Future[dict[TopicPartition, int]] = _running_future()
            if self._closing:
                # An on_revoke during close: the committer has stopped, commit right here.
                try:
                    self._commit_now(native)
                except ClientError as error:
                    future.set_exception(error)
                else:
                    future.set_result(dict(chosen))
                return future
            try:
                self._commit_requests.put_nowait(_CommitRequest(native, future))
            except queue.Full:
                raise ClientError(
                    f"{_MAX_PENDING_COMMITS} asynchronous commits are still queued"
                ) from None
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._commit_in_order, name="headwater-kafka-committer", daemon=True
                )
                self._committer.start()
            return future
        if self._committer is not None and not self._in_callback:
            # Earlier asynchronous commits go first, as Kafka orders them. (Inside a rebalance
            # callback the committer waits for this thread's poll, so this one goes first.)
            self._commit_requests.join()
        self._commit_now(native)
        return None

    def _commit_now(self, native: list[confluent_kafka.TopicPartition]) -> None:
        try:
            result = self._consumer.commit(offsets=native, asynchronous=False)
        except KafkaException as exception:
            raise _from_exception(exception, "cannot commit") from None
        except RuntimeError:
            raise ClientClosedError("the consumer closed before the commit") from None
        _check_partition_errors(result, "cannot commit")

    def _commit_in_order(self) -> None:
        """The committer thread: synchronous commits, one at a time, until `close`.
        (confluent-kafka runs them between the owner's polls.)"""
        while True:
            request = self._commit_requests.get()
            try:
                if request is None:
                    return
                try:
                    self._commit_now(request.offsets)
                except Exception as error:  # the future carries it; the thread goes on
                    request.future.set_exception(error)
                else:
                    request.future.set_result(
                        {_ours(item): item.offset for item in request.offsets}
                    )
            finally:
                self._commit_requests.task_done()

    def committed(
        self, partitions: Sequence[TopicPartition], timeout: float | None = None
    ) -> dict[TopicPartition, int | None]:
        self._check_open()
        self._check_group("committed()")
        if not partitions:
            return {}
        native = [_native(TopicPartition(*partition)) for partition in partitions]
        try:
            found = self._consumer.committed(
                native, timeout=self._request_timeout if timeout is None else timeout
            )
        except KafkaException as exception:
            raise _from_exception(exception, "cannot read committed offsets") from None
        _check_partition_errors(found, "cannot read the committed offset of")
        return {_ours(item): item.offset if item.offset >= 0 else None for item in found}

    # --- flow -------------------------------------------------------------------------------

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._check_open()
        chosen = [TopicPartition(*partition) for partition in partitions]
        if not chosen:
            return
        try:
            self._consumer.pause([_native(partition) for partition in chosen])
        except KafkaException as exception:
            raise _from_exception(exception, "cannot pause") from None
        self._paused.update(chosen)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._check_open()
        chosen = [TopicPartition(*partition) for partition in partitions]
        if not chosen:
            return
        try:
            self._consumer.resume([_native(partition) for partition in chosen])
        except KafkaException as exception:
            raise _from_exception(exception, "cannot resume") from None
        self._paused.difference_update(chosen)

    def paused(self) -> set[TopicPartition]:
        self._check_open()
        return self._paused & self.assignment()

    def close(self) -> None:
        with self._close_lock:
            if self._closing or self._closed:
                return
            self._closing = True
        try:
            if self._committer is not None:
                # Queued asynchronous commits complete first, as Java's close waits for them.
                self._commit_requests.put(None)
                self._committer.join()
            # Commits (with auto-commit), revokes (calling on_revoke) and leaves the group.
            self._consumer.close()
        except (KafkaException, RuntimeError) as exception:
            _log.warning("closing the consumer: %s", exception)
        finally:
            self._closed = True
            if self._on_close is not None:
                self._on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed


# --- admin --------------------------------------------------------------------------------------

_GROUP_STATES = {
    ConsumerGroupState.EMPTY: "Empty",
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
    ConsumerGroupState.DEAD: "Dead",
    ConsumerGroupState.UNKNOWN: "Unknown",
}

K = TypeVar("K")


class KafkaAdmin(Admin):
    """Admin operations through librdkafka's AdminClient, one request timeout each."""

    def __init__(
        self,
        bootstrap_servers: str,
        config: Mapping[str, Any],
        *,
        on_close: Callable[[object], None] | None = None,
    ) -> None:
        options = _translate(Role.ADMIN, config)
        options.update(
            {
                "bootstrap.servers": bootstrap_servers,
                "logger": _librdkafka_logger(),
                "error_cb": self._on_error,
            }
        )
        self._timeout: float = setting(config, "request.timeout.ms") / 1000
        self._admin: AdminClient = _new_handle(AdminClient, options, "admin client")
        self._on_close = on_close
        self._closed = False

    def _on_error(self, error: KafkaError) -> None:
        _log.debug("admin: %s", _error_text(error))

    def _check_open(self) -> AdminClient:
        if self._closed:
            raise ClientClosedError("the admin client is closed")
        return self._admin

    def _results(
        self,
        futures: Mapping[K, Future[Any]],
        order: Sequence[K],
        context: Callable[[K], str],
    ) -> dict[K, Any]:
        """Every future's result; after all finished, raise the first failure (in `order`)."""
        results, first = self._outcomes(futures, order, context)
        if first is not None:
            raise first
        return results

    def _outcomes(
        self,
        futures: Mapping[K, Future[Any]],
        order: Sequence[K],
        context: Callable[[K], str],
    ) -> tuple[dict[K, Any], HeadwaterError | None]:
        """Every future's result, and the first failure (in `order`)."""
        results: dict[K, Any] = {}
        first: HeadwaterError | None = None
        for key in order:
            try:
                results[key] = futures[key].result(timeout=self._timeout + _ADMIN_GRACE_S)
            except KafkaException as exception:
                if _code_of(exception) == KafkaError._NOENT:
                    # librdkafka's answer for a partition the topic does not have.
                    exception = KafkaException(
                        KafkaError(KafkaError._UNKNOWN_PARTITION, "Unknown partition")
                    )
                first = first or _from_exception(exception, context(key))
            except FutureTimeoutError:
                first = first or KafkaTimeoutError(f"{context(key)}: no reply")
        self._admin.poll(0)  # serve queued log lines and error callbacks
        return results, first

    def _settle(self, done: Callable[[Mapping[str, Any]], bool]) -> None:
        """Wait (up to the request timeout) until the brokers' metadata shows a change the
        controller has made: Kafka's brokers learn of it a moment later, and a program that
        creates a topic and then lists it must see it."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                metadata = self._admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
                if done(metadata.topics):
                    return
            except KafkaException:
                pass  # the change itself succeeded; this is only a courtesy wait
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def _retrying(self, read: Callable[[], T]) -> T:
        """`read()`, again while it fails with a retriable error (a leader moving, a topic
        just created not known everywhere yet), as Java's admin client retries."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return read()
            except ClientError as error:
                if (
                    not error.retriable
                    or error.error_code == KafkaError.UNKNOWN_TOPIC_OR_PART
                    or time.monotonic() >= deadline
                ):
                    raise
            time.sleep(0.05)

    # --- topics -----------------------------------------------------------------------------

    def create_topics(self, topics: Sequence[NewTopic]) -> None:
        admin = self._check_open()
        # A name given twice is created once, as the first asks (as Java's admin client does).
        unique = {topic.name: topic for topic in reversed(topics)}
        chosen = [unique[name] for name in dict.fromkeys(topic.name for topic in topics)]
        if not chosen:
            return
        requested = [
            NativeNewTopic(
                topic.name,
                topic.partitions,
                topic.replication_factor,
                config={key: str(value) for key, value in topic.config.items()},
            )
            for topic in chosen
        ]
        futures = admin.create_topics(
            requested, operation_timeout=self._timeout, request_timeout=self._timeout
        )
        created, first = self._outcomes(
            futures,
            [topic.name for topic in chosen],
            lambda name: f"cannot create topic {name!r}",
        )
        counts = {topic.name: topic.partitions for topic in chosen if topic.name in created}
        self._settle(
            lambda known: all(_has_partitions(known, name, count) for name, count in counts.items())
        )
        if first is not None:
            raise first

    def delete_topics(self, names: Sequence[str]) -> None:
        admin = self._check_open()
        if not names:
            return
        unique = list(dict.fromkeys(names))
        futures = admin.delete_topics(
            unique, operation_timeout=self._timeout, request_timeout=self._timeout
        )
        deleted, first = self._outcomes(
            futures, unique, lambda name: f"cannot delete topic {name!r}"
        )
        self._settle(lambda known: not any(name in known for name in deleted))
        if first is not None:
            raise first

    def list_topics(self, *, internal: bool = False) -> list[str]:
        admin = self._check_open()
        try:
            metadata = admin.list_topics(timeout=self._timeout)
        except KafkaException as exception:
            raise _from_exception(exception, "cannot list topics") from None
        names: list[str] = list(metadata.topics)
        return sorted(name for name in names if internal or not name.startswith("__"))

    def describe_topic(self, name: str) -> TopicDescription:
        admin = self._check_open()
        futures = admin.describe_topics(TopicCollection([name]), request_timeout=self._timeout)
        described = self._results(futures, [name], lambda _: f"cannot describe topic {name!r}")[
            name
        ]
        ids = sorted(info.id for info in described.partitions)
        marks = self._watermarks([TopicPartition(name, partition) for partition in ids])
        return TopicDescription(
            name,
            [
                PartitionDescription(partition, *marks[TopicPartition(name, partition)])
                for partition in ids
            ],
            bool(described.is_internal),
        )

    def create_partitions(self, name: str, total: int) -> None:
        admin = self._check_open()
        futures = admin.create_partitions(
            [NewPartitions(name, total)],
            operation_timeout=self._timeout,
            request_timeout=self._timeout,
        )
        self._results(futures, [name], lambda _: f"cannot add partitions to topic {name!r}")
        self._settle(lambda known: _has_partitions(known, name, total))

    def describe_configs(self, name: str) -> dict[str, str]:
        admin = self._check_open()
        resource = ConfigResource(ResourceType.TOPIC, name)
        futures = admin.describe_configs([resource], request_timeout=self._timeout)
        (entries,) = self._results(
            futures, list(futures), lambda _: f"cannot describe the configs of topic {name!r}"
        ).values()
        return {
            key: str(entry.value)
            for key, entry in sorted(entries.items())
            if entry.value is not None
        }

    def alter_configs(
        self,
        name: str,
        set: Mapping[str, str] | None = None,
        delete: Sequence[str] = (),
    ) -> None:
        admin = self._check_open()
        entries = [
            ConfigEntry(key, str(value), incremental_operation=AlterConfigOpType.SET)
            for key, value in (set or {}).items()
        ] + [
            ConfigEntry(key, None, incremental_operation=AlterConfigOpType.DELETE) for key in delete
        ]
        if not entries:
            return
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
        futures = admin.incremental_alter_configs([resource], request_timeout=self._timeout)
        self._results(
            futures, list(futures), lambda _: f"cannot alter the configs of topic {name!r}"
        )

    def delete_records(self, offsets: Mapping[TopicPartition, int]) -> None:
        admin = self._check_open()
        if not offsets:
            return
        native = [_native(TopicPartition(*key), offset) for key, offset in offsets.items()]
        futures = admin.delete_records(
            native, request_timeout=self._timeout, operation_timeout=self._timeout
        )
        self._results(
            futures,
            list(futures),
            lambda item: f"cannot delete records of {item.topic}/{item.partition}",
        )

    # --- groups -----------------------------------------------------------------------------

    def list_groups(self) -> list[GroupListing]:
        admin = self._check_open()
        future = admin.list_consumer_groups(request_timeout=self._timeout)
        listed = self._results({0: future}, [0], lambda _: "cannot list groups")[0]
        if listed.errors and not listed.valid:
            raise _from_exception(listed.errors[0], "cannot list groups")
        return sorted(
            (
                GroupListing(
                    group.group_id,
                    _GROUP_STATES.get(group.state, "Unknown"),
                    "" if group.is_simple_consumer_group else "consumer",
                )
                for group in listed.valid
            ),
            key=lambda listing: listing.group_id,
        )

    def describe_group(self, group_id: str) -> GroupDescription:
        admin = self._check_open()

        def read() -> Any:
            # A group's coordinator may still be loading it (COORDINATOR_LOAD_IN_PROGRESS).
            futures = admin.describe_consumer_groups([group_id], request_timeout=self._timeout)
            return self._results(
                futures, [group_id], lambda _: f"cannot describe group {group_id!r}"
            )[group_id]

        try:
            described = self._retrying(read)
        except ClientError as error:
            if error.error_code == KafkaError.GROUP_ID_NOT_FOUND:
                return GroupDescription(group_id, "Dead", "", "", [])
            raise
        state = _GROUP_STATES.get(described.state, "Unknown")
        members = [
            MemberDescription(
                member.member_id,
                member.client_id,
                member.host,
                member.group_instance_id,
                sorted(
                    _ours(item)
                    for item in (
                        member.assignment.topic_partitions if member.assignment is not None else []
                    )
                ),
            )
            for member in described.members
        ]
        simple = described.is_simple_consumer_group or (state == "Dead" and not members)
        return GroupDescription(
            group_id,
            state,
            "" if simple else "consumer",
            described.partition_assignor or "",
            members,
        )

    def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        admin = self._check_open()

        def read() -> Any:
            futures = admin.list_consumer_group_offsets(
                [confluent_kafka.ConsumerGroupTopicPartitions(group_id)],
                request_timeout=self._timeout,
            )
            return self._results(
                futures, [group_id], lambda _: f"cannot list the offsets of group {group_id!r}"
            )[group_id]

        listed = self._retrying(read)
        partitions = listed.topic_partitions or []
        _check_partition_errors(partitions, f"cannot read group {group_id!r} offset of")
        return {_ours(item): item.offset for item in sorted(partitions) if item.offset >= 0}

    def alter_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        admin = self._check_open()
        if not offsets:
            return
        native = [_native(TopicPartition(*key), offset) for key, offset in offsets.items()]
        futures = admin.alter_consumer_group_offsets(
            [confluent_kafka.ConsumerGroupTopicPartitions(group_id, native)],
            request_timeout=self._timeout,
        )
        altered = self._results(
            futures, [group_id], lambda _: f"cannot alter the offsets of group {group_id!r}"
        )[group_id]
        _check_partition_errors(
            altered.topic_partitions or [], f"cannot alter group {group_id!r} offset of"
        )

    def delete_groups(self, group_ids: Sequence[str]) -> None:
        admin = self._check_open()
        if not group_ids:
            return
        unique = list(dict.fromkeys(group_ids))
        futures = admin.delete_consumer_groups(unique, request_timeout=self._timeout)
        self._results(futures, unique, lambda group: f"cannot delete group {group!r}")

    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        partition = TopicPartition(*partition)
        return self._watermarks([partition])[partition]

    def _watermarks(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, int]]:
        """(log start offset, high watermark) of each partition: two ListOffsets requests."""
        admin = self._check_open()
        if not partitions:
            return {}
        found: dict[str, dict[TopicPartition, int]] = {}
        specs = {
            "earliest": OffsetSpec.earliest(),  # type: ignore[no-untyped-call]
            "latest": OffsetSpec.latest(),  # type: ignore[no-untyped-call]
        }
        for label, spec in specs.items():
            requests = {_native(partition): spec for partition in partitions}

            def read(requests: dict[confluent_kafka.TopicPartition, Any] = requests) -> Any:
                futures = admin.list_offsets(requests, request_timeout=self._timeout)
                return self._results(futures, list(futures), _offsets_context)

            results = self._retrying(read)
            found[label] = {_ours(item): info.offset for item, info in results.items()}
        return {
            partition: (found["earliest"][partition], found["latest"][partition])
            for partition in partitions
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._admin.poll(0)
        if self._on_close is not None:
            self._on_close(self)


# --- the connection -----------------------------------------------------------------------------

Made = TypeVar("Made", KafkaProducer, KafkaConsumer, KafkaAdmin)


def _has_partitions(known: Mapping[str, Any], name: str, count: int) -> bool:
    """Whether metadata `known` shows topic `name` with `count` partitions (any, if < 1: the
    broker's default)."""
    topic = known.get(name)
    if topic is None or topic.error is not None:
        return False
    return len(topic.partitions) == count if count >= 1 else len(topic.partitions) > 0


def _offsets_context(partition: confluent_kafka.TopicPartition) -> str:
    return f"cannot read the offsets of {partition.topic}/{partition.partition}"


def _close_order(made: KafkaProducer | KafkaConsumer | KafkaAdmin) -> int:
    """Consumers first (their final commits), then producers (flushing), then admin clients."""
    if isinstance(made, KafkaConsumer):
        return 0
    return 1 if isinstance(made, KafkaProducer) else 2


class KafkaClient(Client):
    """A connection to a Kafka-protocol cluster: the producers, consumers and admin clients it
    makes share its settings, and closing it closes them."""

    def __init__(self, bootstrap_servers: str, settings: Mapping[str, Any]) -> None:
        self.url = "kafka://" + bootstrap_servers
        self._bootstrap_servers = bootstrap_servers
        self._settings = dict(settings)
        self._made: dict[int, KafkaProducer | KafkaConsumer | KafkaAdmin] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._sequence = itertools.count()

    def _role_settings(self, role: Role) -> dict[str, Any]:
        """The connection's settings this role takes (librdkafka passthrough goes to all)."""
        return {
            key: value
            for key, value in self._settings.items()
            if key.startswith(PASSTHROUGH_PREFIX) or (key in KEYS and role in KEYS[key].roles)
        }

    def _config(
        self, role: Role, config: Mapping[str, Any] | None, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        if self._closed:
            raise ClientClosedError("the connection is closed")
        return parse_config(role, self._role_settings(role), config, settings)

    def _track(self, make: Callable[[Callable[[object], None]], Made]) -> Made:
        with self._lock:
            if self._closed:
                raise ClientClosedError("the connection is closed")
            number = next(self._sequence)

        def forget(_made: object) -> None:
            with self._lock:
                self._made.pop(number, None)

        made = make(forget)
        with self._lock:
            closed = self._closed
            if not closed:
                self._made[number] = made
        if closed:
            made.close()
            raise ClientClosedError("the connection is closed")
        return made

    def producer(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        key_serializer: Any = None,
        value_serializer: Any = None,
        **settings: Any,
    ) -> Producer:
        parsed = self._config(Role.PRODUCER, config, settings)
        return self._track(
            lambda forget: KafkaProducer(
                self._bootstrap_servers,
                parsed,
                key_serializer=key_serializer,
                value_serializer=value_serializer,
                on_close=forget,
            )
        )

    def consumer(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        key_deserializer: Any = None,
        value_deserializer: Any = None,
        **settings: Any,
    ) -> Consumer:
        parsed = self._config(Role.CONSUMER, config, settings)
        return self._track(
            lambda forget: KafkaConsumer(
                self._bootstrap_servers,
                parsed,
                key_deserializer=key_deserializer,
                value_deserializer=value_deserializer,
                on_close=forget,
            )
        )

    def admin(self, config: Mapping[str, Any] | None = None, **settings: Any) -> Admin:
        parsed = self._config(Role.ADMIN, config, settings)
        return self._track(
            lambda forget: KafkaAdmin(self._bootstrap_servers, parsed, on_close=forget)
        )

    def close(self) -> None:
        """Close consumers (committing, leaving groups), then producers (flushing), then admin
        clients; every one is closed even if another fails, and the first failure is raised."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            made = list(self._made.values())
        first: BaseException | None = None
        for item in sorted(made, key=_close_order):
            try:
                item.close()
            except Exception as error:
                first = first or error
        if first is not None:
            raise first


__all__ = ["KafkaAdmin", "KafkaClient", "KafkaConsumer", "KafkaProducer", "map_error"]

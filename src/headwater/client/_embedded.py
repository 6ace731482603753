"""The embedded backend: the log engine inside this process, no server.

`connect("file:///path")` returns an `EmbeddedClient`. Producers append record batches straight
to the partition logs, consumers decode them back with `PartitionLog.read_records`, and consumer
groups run in `EmbeddedGroups` over the data directory's `__consumer_offsets`, so a directory
written here can later be served by `headwater serve`, and the other way round.

A data directory belongs to one process (the log manager holds an flock on it). Inside that
process every client of the same directory shares one `LogManager` through a registry, so
`connect(path)` may be called as often as is convenient; the last `close` closes the manager.

Where an in-process log could behave differently from a Kafka client talking to a broker, it
behaves like Kafka: topics are auto-created on produce and on subscribe (as Kafka's default
`auto.create.topics.enable=true` with `num.partitions=1`), keyed records land where Kafka's
murmur2 partitioner puts them, out-of-range positions reset per `auto.offset.reset`, and
`acks=all` waits for the topic's flush policy exactly as `headwater serve` does.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import functools
import importlib
import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from itertools import accumulate, chain, repeat
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar, cast

from headwater import limits
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
    Deserializer,
    Serializer,
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
    HeadwaterError,
    InvalidTopicError,
    KafkaTimeoutError,
    LogClosedError,
    OffsetOutOfRangeError,
    RecordBatchTooLargeError,
    SerializationError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from headwater.log.compression import Compression
from headwater.log.config import TopicConfig
from headwater.log.manager import META_DIRECTORY, LogManager, TopicInfo, open_log_manager
from headwater.log.partition_log import AppendResult, PartitionLog, RecordsResult, now_ms
from headwater.log.partitioner import StickyPartitioner, partition_for_key
from headwater.log.record_batch import (
    BATCH_HEADER_SIZE,
    NewRecord,
    Record,
    encode_batch,
    encode_values_batch,
)

_log = logging.getLogger(__name__)

# Kafka's `num.partitions` default, which `headwater serve` also uses for auto-created topics.
AUTO_CREATE_PARTITIONS = 1
# Kafka's `max.block.ms` default: how long `send` blocks while `buffer.memory` is full. Kafka
# has a key for it; the shared config does not, so the default applies.
BUFFER_WAIT_MS_MAX = 60_000
# How long a waiting `poll` sleeps at most between looks at the log, for records appended by
# something that does not signal (another API in this process), and for group events.
POLL_WAIT_SLICE_MS = 50

# Kafka's error codes the client raises itself.
INVALID_GROUP_ID = 24
INVALID_REPLICATION_FACTOR = 38

_INTERNAL_PREFIX = "__"
_META_ROOT = os.path.normpath(META_DIRECTORY).split(os.sep)[0]

_PRODUCER_CODECS = {
    "none": Compression.NONE,
    "gzip": Compression.GZIP,
    "snappy": Compression.SNAPPY,
    "lz4": Compression.LZ4,
    "zstd": Compression.ZSTD,
}
# A topic's own `compression.type` wins over the producer's, as a Kafka broker recompresses.
_TOPIC_CODECS = {
    "uncompressed": Compression.NONE,
    "gzip": Compression.GZIP,
    "snappy": Compression.SNAPPY,
    "lz4": Compression.LZ4,
    "zstd": Compression.ZSTD,
}

# Upper bounds of a record's framing in a batch (length, attributes, timestamp delta, offset
# delta, key and value lengths, header count) when `send_many` plans its batches: every length
# below 8 KiB takes a 2-byte varint, an offset delta at most 3 bytes (a batch holds at most
# RECORDS_PER_BATCH_MAX < 2**20 records), the shared timestamp's delta 1 byte; else every
# varint its widest.
_SMALL_RECORD_BYTES_MAX = 8_000
_SMALL_RECORD_OVERHEAD_BYTES = 2 + 1 + 1 + 3 + 2 + 2 + 1
_RECORD_OVERHEAD_BYTES_MAX = 5 + 1 + 1 + 3 + 5 + 5 + 1
invariant(limits.RECORDS_PER_BATCH_MAX < 2**20, "an offset delta fits a 3-byte varint")

_new_tuple = tuple.__new__  # builds NamedTuples without their Python-level __new__
_BYTES_SERIALIZER = resolve_serializer(None)
_PLAIN_TYPES = frozenset({bytes, type(None)})


# --- the shared data directory -----------------------------------------------------------------


class _Member(Protocol):
    """What the consumer uses of a group member (`headwater.client._embedded_group`)."""

    def subscribe(self, topics: list[str] | None, pattern: re.Pattern[str] | None) -> None: ...

    def take_events(self) -> Sequence[tuple[str, Sequence[TopicPartition]]]: ...

    def events_handled(self) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def poll_seen(self) -> None: ...

    def close(self) -> None: ...


class _Groups(Protocol):
    """What the client uses of `EmbeddedGroups`: members, simple commits, the admin calls."""

    def member(
        self,
        group_id: str,
        consumer_config: dict[str, Any],
        *,
        list_topics: Callable[[], list[str]],
        partition_count: Callable[[str], int],
    ) -> _Member: ...

    def commit_offsets(self, group_id: str, offsets: dict[TopicPartition, int]) -> None: ...

    def committed(
        self, group_id: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int | None]: ...

    def list_groups(self) -> list[GroupListing]: ...

    def describe_group(self, group_id: str) -> GroupDescription: ...

    def list_offsets(self, group_id: str) -> dict[TopicPartition, int]: ...

    def alter_offsets(self, group_id: str, offsets: dict[TopicPartition, int]) -> None: ...

    def delete_groups(self, group_ids: list[str]) -> None: ...

    def close(self) -> None: ...


if TYPE_CHECKING:  # the real groups satisfy the protocols above (imported lazily at run time)
    from headwater.client._embedded_group import EmbeddedGroups

    _groups_type_check: Callable[[LogManager], _Groups] = EmbeddedGroups


class _DataDirectory:
    """One data directory opened by this process: its manager, its groups, a reference count.

    Owns the `LogManager` (and its maintenance thread) and the `EmbeddedGroups`. Thread-safe:
    the count changes under the registry lock, the groups are made under `_lock`.
    """

    def __init__(self, path: str, manager: LogManager) -> None:
        self.path = path
        self.manager = manager
        self.references = 1
        self._lock = threading.Lock()
        self._groups: _Groups | None = None

    def groups(self) -> _Groups:
        """The directory's groups, made on first use: a producer-only application never
        creates `__consumer_offsets`."""
        with self._lock:
            if self._groups is None:
                try:
                    module = importlib.import_module("headwater.client._embedded_group")
                except ImportError as error:
                    raise ClientError(
                        f"consumer groups are not available in embedded mode: {error}"
                    ) from error
                self._groups = cast(_Groups, module.EmbeddedGroups(self.manager))
            return self._groups

    def close(self) -> None:
        with self._lock:
            groups, self._groups = self._groups, None
        try:
            if groups is not None:
                groups.close()
        finally:
            self.manager.close()


_directories: dict[str, _DataDirectory] = {}
_directories_lock = threading.Lock()


def _check_data_dir(path: str) -> None:
    """Refuse a path that is neither a Headwater data directory nor new or empty.

    Loading a directory removes `NAME-N` subdirectories it has no topic for; a mistyped path
    must not make someone's files into a data directory (the CLI refuses the same way).
    """
    if not os.path.exists(path) or os.path.isdir(os.path.join(path, _META_ROOT)):
        return
    if not os.path.isdir(path):
        raise ConfigError(f"data directory {path} is not a directory")
    if os.listdir(path):
        raise ConfigError(
            f"{path} is not a Headwater data directory and is not empty; refusing to use it"
        )


def _open_directory(path: str) -> _DataDirectory:
    """The process's handle on `path`, opened (and its maintenance started) on first use."""
    real = os.path.realpath(path)
    with _directories_lock:
        directory = _directories.get(real)
        if directory is not None:
            directory.references += 1
            return directory
        _check_data_dir(real)
        manager = open_log_manager(real, owner="headwater embedded client")
        try:
            manager.start_background()
        except BaseException:
            manager.close()
            raise
        directory = _DataDirectory(real, manager)
        _directories[real] = directory
        return directory


def _release_directory(directory: _DataDirectory) -> None:
    """Drop one reference; the last one closes the groups and the manager.

    Closing happens under the registry lock, so a concurrent `connect` of the same path waits
    for the flock to be released instead of failing on it.
    """
    with _directories_lock:
        directory.references -= 1
        invariant(directory.references >= 0, "a data directory is released once per open")
        if directory.references > 0:
            return
        del _directories[directory.path]
        directory.close()


def _topic_info(manager: LogManager, topic: str, *, create: bool) -> TopicInfo:
    """The topic's info, auto-creating it with Kafka's defaults when `create`."""
    try:
        return manager.topic(topic)
    except UnknownTopicOrPartitionError:
        if not create:
            raise
    with contextlib.suppress(TopicAlreadyExistsError):  # another thread was first
        manager.create_topic(topic, AUTO_CREATE_PARTITIONS)
    return manager.topic(topic)


# --- errors ------------------------------------------------------------------------------------
#
# The log raises typed errors (UnknownTopicOrPartitionError, ...), each a `ClientError` already,
# as the Kafka backend raises them. The few that are not (a data directory locked by another
# process, a failed invariant, producer-state errors) become a `ClientError` with their code.


def _client_error(error: HeadwaterError) -> ClientError:
    """`error` as a `ClientError`, keeping its message, Kafka code and cause."""
    if isinstance(error, ClientError):
        return error
    converted = ClientError(str(error), error_code=error.error_code, retriable=error.retriable)
    converted.__cause__ = error
    return converted


def _as_client_error(error: BaseException) -> BaseException:
    return _client_error(error) if isinstance(error, HeadwaterError) else error


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _client_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Raise the log's typed errors from `method` as `_client_error` flavours."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except ClientError:
            raise
        except HeadwaterError as error:
            raise _client_error(error) from error

    return wrapper


# --- waking consumers --------------------------------------------------------------------------


class _AppendSignal:
    """Counts appends made in this process so waiting consumers wake at once, not on a timer.

    Thread-safe. A waiter reads `count` before it looks at the log and waits only while the
    count is unchanged, so an append between its look and its wait is never missed.
    """

    __slots__ = ("_condition", "count")

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self.count = 0

    def notify(self) -> None:
        with self._condition:
            self.count += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self._condition:
            if self.count == seen:
                self._condition.wait(timeout)


_appended = _AppendSignal()


# --- the client --------------------------------------------------------------------------------


def _applies(key: str, role: Role) -> bool:
    return key.startswith(PASSTHROUGH_PREFIX) or (key in KEYS and role in KEYS[key].roles)


class EmbeddedClient(Client):
    """A connection to one data directory in this process.

    Owns one reference to the shared directory and every producer, consumer and admin client it
    made. Thread-safe.
    """

    @_client_errors
    def __init__(self, path: str, settings: Mapping[str, Any]) -> None:
        # Each role takes the connection's keys it knows; the values are checked now, so a bad
        # one fails `connect` rather than the first producer.
        self._settings = {
            role: {key: value for key, value in settings.items() if _applies(key, role)}
            for role in Role
        }
        for role, chosen in self._settings.items():
            parse_config(role, chosen)
        self._directory = _open_directory(path)
        self.url = "file://" + self._directory.path
        self._lock = threading.Lock()
        self._children: list[EmbeddedConsumer | EmbeddedProducer | EmbeddedAdmin] = []
        self._closed = False
        _live_clients.add(self)

    @property
    def manager(self) -> LogManager:
        return self._directory.manager

    def groups(self) -> _Groups:
        return self._directory.groups()

    def _adopt(
        self, make: Callable[[], EmbeddedConsumer | EmbeddedProducer | EmbeddedAdmin]
    ) -> Any:
        with self._lock:
            if self._closed:
                raise ClientClosedError(f"the connection to {self.url} is closed")
            child = make()
            self._children.append(child)
            return child

    def forget(self, child: object) -> None:
        """Called by a child as it closes."""
        with self._lock, contextlib.suppress(ValueError):
            self._children.remove(child)  # type: ignore[arg-type]

    @_client_errors
    def producer(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        key_serializer: Any = None,
        value_serializer: Any = None,
        **settings: Any,
    ) -> EmbeddedProducer:
        parsed = parse_config(Role.PRODUCER, self._settings[Role.PRODUCER], config, settings)
        keys, values = resolve_serializer(key_serializer), resolve_serializer(value_serializer)
        return cast(
            EmbeddedProducer, self._adopt(lambda: EmbeddedProducer(self, parsed, keys, values))
        )

    @_client_errors
    def consumer(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        key_deserializer: Any = None,
        value_deserializer: Any = None,
        **settings: Any,
    ) -> EmbeddedConsumer:
        parsed = parse_config(Role.CONSUMER, self._settings[Role.CONSUMER], config, settings)
        keys = resolve_deserializer(key_deserializer)
        values = resolve_deserializer(value_deserializer)
        return cast(
            EmbeddedConsumer, self._adopt(lambda: EmbeddedConsumer(self, parsed, keys, values))
        )

    @_client_errors
    def admin(self, config: Mapping[str, Any] | None = None, **settings: Any) -> EmbeddedAdmin:
        parse_config(Role.ADMIN, self._settings[Role.ADMIN], config, settings)
        return cast(EmbeddedAdmin, self._adopt(lambda: EmbeddedAdmin(self)))

    def close(self) -> None:
        """Close consumers (they commit and leave), producers (they flush), admins, then let
        go of the data directory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            children = list(self._children)

        def rank(child: object) -> int:
            return (
                0
                if isinstance(child, EmbeddedConsumer)
                else 1
                if isinstance(child, EmbeddedProducer)
                else 2
            )

        try:
            for child in sorted(children, key=rank):
                try:
                    child.close()
                except Exception:
                    _log.exception("closing %r failed", child)
        finally:
            _live_clients.discard(self)
            _release_directory(self._directory)

    def __repr__(self) -> str:
        return f"EmbeddedClient({self.url!r})"


# Clients still open at interpreter exit are closed, so queued records are appended and the
# data directory gets its clean-shutdown marker.
_live_clients: weakref.WeakSet[EmbeddedClient] = weakref.WeakSet()


@atexit.register
def _close_clients_at_exit() -> None:
    for client in list(_live_clients):
        try:
            client.close()
        except Exception:
            _log.exception("closing %r at exit failed", client)


# --- the producer ------------------------------------------------------------------------------

# Builds a RecordMetadata from a tuple of its fields, skipping the named tuple's Python-level
# __new__ (a frame per record).
_tuple_new = tuple.__new__


def _varint_bytes(value: int) -> int:
    """The length of `value` as a zigzag varint (7 bits a byte)."""
    zigzag = value << 1 if value >= 0 else (~value << 1) | 1
    return 1 if zigzag < 0x80 else (zigzag.bit_length() + 6) // 7


def _headers_bytes(headers: Sequence[tuple[str, bytes | None]]) -> int:
    size = _varint_bytes(len(headers))
    for key, value in headers:
        encoded = len(key.encode())
        size += _varint_bytes(encoded) + encoded
        size += 1 if value is None else _varint_bytes(len(value)) + len(value)
    return size


def _record_body_bytes(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> int:
    """A record's encoded size, without its length varint, when its deltas are 0 (1 byte
    each); `_record_bytes` adjusts it for its place in a batch. (Lengths under 64 take one
    varint byte, under 8192 two: tested inline, as this runs for every record sent.)"""
    body = 3  # attributes, timestamp delta, offset delta
    if key is None:
        body += 1
    else:
        length = len(key)
        body += length + (1 if length < 64 else 2 if length < 8192 else _varint_bytes(length))
    if value is None:
        body += 1
    else:
        length = len(value)
        body += length + (1 if length < 64 else 2 if length < 8192 else _varint_bytes(length))
    return body + (_headers_bytes(headers) if headers else 1)


def _record_bytes(body: int, offset_delta: int, timestamp_delta: int) -> int:
    """The exact encoded size of a record inside a batch (Kafka's record format, magic 2)."""
    if offset_delta >= 64 or not -64 <= timestamp_delta < 64:  # wider than 1-byte varints
        body += _varint_bytes(offset_delta) + _varint_bytes(timestamp_delta) - 2
    return body + (1 if body < 64 else 2 if body < 8192 else _varint_bytes(body))


def _check_headers(
    headers: Headers | Mapping[str, bytes | None] | None, topic: str
) -> tuple[tuple[str, bytes | None], ...]:
    if not headers:
        return ()
    items = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)
    for item in items:
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not (item[1] is None or isinstance(item[1], bytes))
        ):
            raise SerializationError(
                f"a header for topic {topic!r} must be (str, bytes or None), not {item!r}"
            )
        try:
            item[0].encode()
        except UnicodeEncodeError as error:
            raise SerializationError(
                f"header key {item[0]!r} for topic {topic!r} is not encodable: {error}"
            ) from None
    return items


class _Batch:
    """Records queued for one partition, appended together as one record batch; owned by its
    producer and guarded by the producer's `_condition` until the sender takes it."""

    __slots__ = (
        "base_timestamp",
        "callbacks",
        "deadline",
        "done",
        "futures",
        "limit_bytes",
        "partition",
        "records",
        "size_bytes",
    )

    def __init__(self, partition: TopicPartition, limit_bytes: int, deadline: float) -> None:
        self.partition = partition
        self.limit_bytes = limit_bytes  # what the batch may grow to: batch.size, max.message.bytes
        self.deadline = deadline  # monotonic seconds: the first record plus linger.ms
        self.records: list[NewRecord] = []
        self.futures: list[DeliveryFuture[RecordMetadata]] = []
        self.callbacks: list[DeliveryCallback | None] = []
        self.size_bytes = BATCH_HEADER_SIZE
        self.base_timestamp = 0
        self.done = False


def _run_callback(
    callback: DeliveryCallback | None,
    metadata: RecordMetadata | None,
    error: BaseException | None,
) -> None:
    if callback is None:
        return
    try:
        callback(metadata, error)
    except Exception:
        _log.exception("a delivery callback failed")


# A batch appended by send_many: (partition, base offset or -1 for acks=0, records, timestamp).
_Run = tuple[int, int, int, int]
# Records of one partition: their indices in the call (None: all of them), and their batches.
_Placement = tuple[list[int] | None, list[_Run]]


class _SendManyFuture(Future[list[RecordMetadata]]):
    """A `send_many` outcome that builds its `RecordMetadata` list on the first `result()`.

    A fast-path caller mostly checks for errors only; a million metadata tuples nobody reads
    would cost as much as encoding the records. Resolved before `send_many` returns. Owns the
    placement of the records; thread-safe (the list is built once, under `_build_lock`).
    """

    def __init__(self, topic: str, count: int) -> None:
        super().__init__()
        self.set_running_or_notify_cancel()
        self._topic = topic
        self._count = count
        self._placements: list[_Placement] = []
        self._metadata: list[RecordMetadata] | None = None
        self._build_lock = threading.Lock()

    def resolve(self, placements: list[_Placement]) -> None:
        self._placements = placements
        self.set_result([])  # a stand-in: `result` answers the built list

    def result(self, timeout: float | None = None) -> list[RecordMetadata]:
        super().result(timeout)  # raises the failure, if any
        with self._build_lock:
            if self._metadata is None:
                self._metadata = self._build()
                self._placements = []
            return self._metadata

    def _expand(self, runs: list[_Run]) -> Iterable[RecordMetadata]:
        topic = self._topic
        return chain.from_iterable(
            map(
                RecordMetadata,
                repeat(topic, count),
                repeat(partition),
                range(base, base + count) if base >= 0 else repeat(-1),
                repeat(timestamp),
            )
            for partition, base, count, timestamp in runs
        )

    def _build(self) -> list[RecordMetadata]:
        if len(self._placements) == 1 and self._placements[0][0] is None:
            return list(self._expand(self._placements[0][1]))
        ordered: list[RecordMetadata | None] = [None] * self._count
        for indices, runs in self._placements:
            invariant(indices is not None, "records spread over partitions keep their indices")
            for index, entry in zip(cast(list[int], indices), self._expand(runs), strict=True):
                ordered[index] = entry
        invariant(None not in ordered, "every record of send_many has its metadata")
        return cast(list[RecordMetadata], ordered)


class EmbeddedProducer(Producer):
    """Appends records to the logs of its client's data directory.

    Owns its record accumulator and one sender thread (started on the first `send`) that
    appends batches once full or `linger.ms` old and runs the fsyncs `acks` 0 and 1 do not
    wait for. Thread-safe: every method may be called from any thread.

    Keyless records without a partition use Kafka's sticky partitioner (KIP-480, the Java
    client's default): one partition until its batch is sent, then another at random, so
    batches fill up. `enable.idempotence` is accepted and needs no producer id: an append is a
    function call that lands exactly once or raises, with no network retry to duplicate it.
    """

    def __init__(
        self,
        client: EmbeddedClient,
        config: dict[str, Any],
        key_serializer: Serializer,
        value_serializer: Serializer,
    ) -> None:
        self._client = client
        self._manager = client.manager
        self._acks: int = setting(config, "acks")
        self._linger_s: float = setting(config, "linger.ms") / 1000
        self._batch_bytes_max: int = setting(config, "batch.size")
        # `send_many` honours batch.size only when it is set: unset, its batches are as large as
        # the topic allows, as librdkafka's (1 MB batch.size by default) are on the Kafka backend.
        self._many_batch_bytes_max: int | None = config.get("batch.size")
        self._buffer_bytes_max: int = setting(config, "buffer.memory")
        self._request_bytes_max: int = setting(config, "max.request.size")
        self._compression = _PRODUCER_CODECS[setting(config, "compression.type")]
        self._client_id: str = setting(config, "client.id")
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._plain_keys = passes_bytes(key_serializer)  # bytes in: nothing to call per record
        self._plain_values = passes_bytes(value_serializer)
        # Everything below is guarded by `_condition`.
        # `send` takes the lock itself: `with self._condition` is a Python frame more.
        self._lock = threading.RLock()
        self._condition = threading.Condition(self._lock)
        self._open: dict[tuple[str, int], _Batch] = {}
        self._ready: deque[_Batch] = deque()
        self._in_flight: set[_Batch] = set()
        self._queued_bytes = 0
        self._sticky: dict[str, StickyPartitioner] = {}
        self._flushing = 0  # flush() and close() calls waiting: send every open batch now
        self._log_flushes: dict[PartitionLog, int] = {}  # fsyncs acks 0/1 left to the sender
        self._log_flushes_requested = 0
        self._log_flushes_done = 0
        self._sender: threading.Thread | None = None
        self._closing = False
        self._closed = False

    # --- checks and topics ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise ClientClosedError("the producer is closed")

    def _sticky_partition(self, topic: str, partitions: int) -> StickyPartitioner:
        """The topic's sticky partitioner (under `_condition`), remade if the topic grew."""
        sticky = self._sticky.get(topic)
        if sticky is None or sticky.partition_count != partitions:
            sticky = self._sticky[topic] = StickyPartitioner(partitions)
        return sticky

    def _codec(self, config: TopicConfig) -> Compression:
        return _TOPIC_CODECS.get(config.compression_type, self._compression)

    @_client_errors
    def partitions_for(self, topic: str) -> list[int]:
        self._check_open()
        return list(range(_topic_info(self._manager, topic, create=True).partition_count))

    # --- send: the accumulator --------------------------------------------------------------

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
        # One frame per record: the log's errors are mapped here rather than by
        # `_client_errors`, whose wrapper (and argument packing) would cost every record.
        try:
            if self._closing:
                raise ClientClosedError("the producer is closed")
            key_bytes = key
            if not (self._plain_keys and (key is None or type(key) is bytes)):
                key_bytes = serialize(self._key_serializer, key, topic, "key")
            value_bytes = value
            if not (self._plain_values and (value is None or type(value) is bytes)):
                value_bytes = serialize(self._value_serializer, value, topic, "value")
            header_items = _check_headers(headers, topic) if headers else ()
            future: DeliveryFuture[RecordMetadata] = DeliveryFuture()
            try:
                info = self._manager.topic(topic)
            except HeadwaterError:  # unknown (then made, as Kafka's auto-create does), or worse
                try:
                    info = _topic_info(self._manager, topic, create=True)
                except HeadwaterError as error:
                    return self._fail_now(future, on_delivery, error)
            if partition is not None and not 0 <= partition < info.partition_count:
                raise UnknownTopicOrPartitionError(
                    f"topic {topic!r} has no partition {partition} (it has {info.partition_count})"
                )
            if timestamp is None:
                timestamp = time.time_ns() // 1_000_000
            body = _record_body_bytes(key_bytes, value_bytes, header_items)
            alone = BATCH_HEADER_SIZE + _record_bytes(body, 0, 0)
            if alone > info.config.max_message_bytes or alone > self._request_bytes_max:
                return self._fail_now(future, on_delivery, self._too_large(topic, info, alone))
            if alone > self._buffer_bytes_max:
                return self._fail_now(future, on_delivery, self._too_large(topic, info, alone))
            if partition is None and key_bytes is not None:
                partition = partition_for_key(key_bytes, info.partition_count)
            # A plain tuple with NewRecord's fields (encode_batch reads them by position): the
            # collector untracks it at its first pass, where a NamedTuple stays tracked while
            # it waits in the batch, and every later collection walks it.
            record: NewRecord = (key_bytes, value_bytes, timestamp, header_items)  # type: ignore[assignment]
            timed_out = False
            with self._lock:
                if self._queued_bytes + alone > self._buffer_bytes_max:
                    timed_out = not self._wait_for_buffer(alone)
                if not timed_out:
                    self._enqueue(topic, partition, info, record, body, future, on_delivery)
            if timed_out:
                full = KafkaTimeoutError(
                    f"buffer.memory ({self._buffer_bytes_max} bytes) stayed full for "
                    f"{BUFFER_WAIT_MS_MAX} ms (Kafka's max.block.ms)"
                )
                return self._fail_now(future, on_delivery, full)
            return future
        except ClientError:
            raise
        except HeadwaterError as error:
            raise _client_error(error) from error

    def _too_large(self, topic: str, info: TopicInfo, size: int) -> RecordBatchTooLargeError:
        bounds = (
            (info.config.max_message_bytes, f"max.message.bytes of topic {topic!r}"),
            (self._request_bytes_max, "max.request.size"),
            (self._buffer_bytes_max, "buffer.memory"),
        )
        bound, name = next((bound, name) for bound, name in bounds if size > bound)
        return RecordBatchTooLargeError(
            f"a record of {size} bytes (in a batch of its own) exceeds {name} ({bound})"
        )

    def _enqueue(
        self,
        topic: str,
        partition: int | None,
        info: TopicInfo,
        record: NewRecord,
        body: int,
        future: DeliveryFuture[RecordMetadata],
        on_delivery: DeliveryCallback | None,
    ) -> None:
        """Add a record to its partition's open batch (under `_condition`)."""
        timestamp = cast(int, record[2])  # by position: send queues plain tuples
        keyless = partition is None
        if partition is None:
            partition = self._sticky_partition(topic, info.partition_count).partition()
        batch, size, closed = self._open_batch_with_room(topic, partition, body, timestamp)
        if closed and keyless:
            # KIP-480: a keyless record that would start a new batch goes to the new sticky
            # partition instead (closing the full batch moved the sticky choice on).
            partition = self._sticky_partition(topic, info.partition_count).partition()
            batch, size, _ = self._open_batch_with_room(topic, partition, body, timestamp)
        if batch is None:
            batch_limit = min(self._batch_bytes_max, info.config.max_message_bytes)
            batch = _Batch(
                TopicPartition(topic, partition), batch_limit, time.monotonic() + self._linger_s
            )
            batch.base_timestamp = timestamp
            size = _record_bytes(body, 0, 0)
            self._open[batch.partition] = batch
            self._start_sender()
            self._condition.notify_all()  # the sender learns the new deadline
        batch.records.append(record)
        batch.futures.append(future)
        batch.callbacks.append(on_delivery)
        batch.size_bytes += size
        self._queued_bytes += size
        if batch.size_bytes >= self._batch_bytes_max:
            self._close_batch(batch)

    def _open_batch_with_room(
        self, topic: str, partition: int, body: int, timestamp: int
    ) -> tuple[_Batch | None, int, bool]:
        """The partition's open batch if the record fits in it, the record's size there, and
        whether a batch too full for it was just closed; no batch when a new one must start."""
        batch = self._open.get((topic, partition))  # equal to (and hashed as) TopicPartition
        if batch is None:
            return None, 0, False
        size = _record_bytes(body, len(batch.records), timestamp - batch.base_timestamp)
        if batch.size_bytes + size <= batch.limit_bytes:
            return batch, size, False
        self._close_batch(batch)
        return None, 0, True

    def _fail_now(
        self,
        future: Future[RecordMetadata],
        on_delivery: DeliveryCallback | None,
        error: BaseException,
    ) -> Future[RecordMetadata]:
        error = _as_client_error(error)
        _run_callback(on_delivery, None, error)
        future.set_exception(error)
        return future

    def _wait_for_buffer(self, size: int) -> bool:
        """Block (under `_condition`) while `buffer.memory` is full, as Kafka's max.block.ms;
        False if it stayed full that long."""
        if threading.current_thread() is self._sender:
            return True  # a delivery callback sending: waiting would wait for itself
        deadline = time.monotonic() + BUFFER_WAIT_MS_MAX / 1000
        while self._queued_bytes + size > self._buffer_bytes_max:
            self._check_open()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._condition.wait(remaining)
        return True

    def _close_batch(self, batch: _Batch) -> None:
        """Move an open batch to the ready queue (under `_condition`): it takes no more."""
        del self._open[batch.partition]
        self._ready.append(batch)
        self._batch_closed(batch)
        self._condition.notify_all()

    def _batch_closed(self, batch: _Batch) -> None:
        """KIP-480: once the sticky partition's batch is done, stick to another one."""
        sticky = self._sticky.get(batch.partition.topic)
        if sticky is not None and sticky.partition() == batch.partition.partition:
            sticky.next_batch()

    def _start_sender(self) -> None:
        if self._sender is None:
            self._sender = threading.Thread(
                target=self._run_sender,
                name=f"headwater-producer-{self._client_id}",
                daemon=True,
            )
            self._sender.start()

    # --- the sender thread ------------------------------------------------------------------

    def _take_sendable(self, now: float) -> list[_Batch]:
        """Ready batches, and open ones whose linger is over (every one while flushing)."""
        batches = list(self._ready)
        self._ready.clear()
        hurry = self._flushing > 0 or self._closing
        for batch in list(self._open.values()):
            if hurry or batch.deadline <= now:
                del self._open[batch.partition]
                self._batch_closed(batch)
                batches.append(batch)
        return batches

    def _next_wait(self, now: float) -> float | None:
        if not self._open:
            return None
        return max(0.0, min(batch.deadline for batch in self._open.values()) - now)

    def _run_sender(self) -> None:
        while True:
            with self._condition:
                while True:
                    batches = self._take_sendable(time.monotonic())
                    flushes = self._log_flushes
                    if batches or flushes:
                        break
                    if self._closing and not self._open:
                        return
                    self._condition.wait(self._next_wait(time.monotonic()))
                self._in_flight.update(batches)
                self._log_flushes = {}
                flushes_requested = self._log_flushes_requested
            try:
                if batches:
                    self._append(batches)
                if flushes:
                    self._flush_logs(flushes)
            except BaseException:  # never leave a caller waiting on a dead sender
                _log.exception("the producer's sender failed")
                for batch in batches:
                    if not batch.done:
                        self._complete(batch, None, ClientError("the producer's sender failed"))
            finally:
                if flushes:
                    with self._condition:
                        self._log_flushes_done = flushes_requested
                        self._condition.notify_all()

    def _append(self, batches: list[_Batch]) -> None:
        """Append each batch; answer per `acks` (after the flush policy for acks=all)."""
        appended: list[tuple[_Batch, PartitionLog, AppendResult]] = []
        due: dict[PartitionLog, int] = {}
        for batch in batches:
            try:
                log = self._manager.partition(*batch.partition)
                data = encode_batch(batch.records, compression=self._codec(log.config))
                result = log.append(data, wait_for_flush=False)
            except Exception as error:
                self._complete(batch, None, error)
                continue
            if result.flush_due:
                due[log] = max(due.get(log, 0), result.last_offset + 1)
            appended.append((batch, log, result))
        if self._acks == -1:
            failures = self._flush_logs(due)
            for batch, log, result in appended:
                self._complete(batch, result, failures.get(log))
        else:
            for batch, _, result in appended:
                self._complete(batch, result, None)
            self._flush_logs(due)
        if appended:
            _appended.notify()

    def _flush_logs(self, due: Mapping[PartitionLog, int]) -> dict[PartitionLog, Exception]:
        """Satisfy the flush policy of each log up to its offset; the failures by log."""
        failures: dict[PartitionLog, Exception] = {}
        for log, up_to in due.items():
            try:
                log.flush(up_to)
            except Exception as error:
                _log.error("flushing %s failed: %s", log.name, error)
                failures[log] = error
        if due:
            _appended.notify()  # with flush.messages=1 the high watermark moved only now
        return failures

    def _complete(
        self, batch: _Batch, result: AppendResult | None, error: BaseException | None
    ) -> None:
        """Run the callbacks, then resolve the futures (as Kafka does), then free the buffer."""
        topic, partition = batch.partition
        if error is None:
            invariant(result is not None, "a batch without an error was appended")
            assert result is not None
            invariant(
                result.last_offset - result.base_offset + 1 == len(batch.records),
                "an appended batch keeps its record count",
            )
            append_time = result.log_append_time_ms
            base_offset = result.base_offset if self._acks != 0 else -1
            for index, (record, future, callback) in enumerate(
                zip(batch.records, batch.futures, batch.callbacks, strict=True)
            ):
                metadata = _tuple_new(
                    RecordMetadata,
                    (
                        topic,
                        partition,
                        base_offset + index if base_offset != -1 else -1,
                        append_time if append_time != -1 else record[2],  # its timestamp
                    ),
                )
                if callback is not None:
                    _run_callback(callback, metadata, None)
                future._deliver(metadata)  # each future is completed here once (never cancelled)
        else:
            error = _as_client_error(error)
            for future, callback in zip(batch.futures, batch.callbacks, strict=True):
                _run_callback(callback, None, error)
                with contextlib.suppress(InvalidStateError):
                    future.set_exception(error)
        with self._condition:
            batch.done = True
            self._in_flight.discard(batch)
            self._queued_bytes -= batch.size_bytes - BATCH_HEADER_SIZE
            invariant(self._queued_bytes >= 0, "the buffer never frees more than it held")
            self._condition.notify_all()

    # --- send_many: the fast path -----------------------------------------------------------

    @_client_errors
    def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Future[list[RecordMetadata]]:
        """Encode and append in the caller's thread, one batch per partition per `batch.size`
        (unset: per max.message.bytes); the future is already resolved (acks=all: once the
        flush policy holds).

        On a failure the future fails and batches appended before it stay in the log, as
        Kafka's batches to different partitions succeed or fail on their own.
        """
        self._check_open()
        count = len(values)
        if keys is not None and len(keys) != count:
            raise ClientError(f"send_many got {count} values but {len(keys)} keys")
        value_bytes = _serialize_all(self._value_serializer, values, topic, "value")
        key_bytes = (
            None if keys is None else _serialize_all(self._key_serializer, keys, topic, "key")
        )
        future = _SendManyFuture(topic, count)
        if count == 0:
            future.resolve([])
            return future
        try:
            info = _topic_info(self._manager, topic, create=True)
        except HeadwaterError as error:
            future.set_exception(_client_error(error))
            return future
        partitions = info.partition_count
        if partition is not None and not 0 <= partition < partitions:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has no partition {partition} (it has {partitions})"
            )
        stamp = now_ms() if timestamp is None else timestamp
        try:
            future.resolve(self._send_many(topic, info, value_bytes, key_bytes, partition, stamp))
        except HeadwaterError as error:
            future.set_exception(_client_error(error))
        return future

    def _send_many(
        self,
        topic: str,
        info: TopicInfo,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        partition: int | None,
        stamp: int,
    ) -> list[_Placement]:
        """Append; where the records went, for `_SendManyFuture` to describe when asked."""
        sizes = _lengths(values)
        if keys is not None:
            sizes = [size + length for size, length in zip(sizes, _lengths(keys), strict=True)]
        largest = max(sizes)
        overhead = (
            _SMALL_RECORD_OVERHEAD_BYTES
            if largest < _SMALL_RECORD_BYTES_MAX
            else _RECORD_OVERHEAD_BYTES_MAX
        )
        limit = min(info.config.max_message_bytes, self._request_bytes_max)
        if BATCH_HEADER_SIZE + largest + overhead > limit:
            raise RecordBatchTooLargeError(
                f"a record of about {BATCH_HEADER_SIZE + largest + overhead} bytes (in its own "
                f"batch) exceeds max.message.bytes of topic {topic!r} or max.request.size ({limit})"
            )
        budget = min(self._many_batch_bytes_max or limit, limit) - BATCH_HEADER_SIZE
        # The plan: partition -> (indices of its records or None for all, chunks of them).
        plan: list[tuple[int, list[int] | None]] = []
        if partition is not None:
            plan.append((partition, None))
        elif keys is None or all(key is None for key in keys):
            plan.append((-1, None))  # sticky: each batch to the next sticky partition
        else:
            by_partition: dict[int, list[int]] = {}
            with self._condition:
                sticky = self._sticky_partition(topic, info.partition_count).partition()
            for index, key in enumerate(keys):
                chosen = sticky if key is None else partition_for_key(key, info.partition_count)
                by_partition.setdefault(chosen, []).append(index)
            plan.extend(by_partition.items())
        placements: list[_Placement] = []
        self._wait_for_queued(topic, {chosen for chosen, _ in plan})
        due: dict[PartitionLog, int] = {}
        for chosen, indices in plan:
            if indices is None:
                part_values, part_keys, part_sizes = values, keys, sizes
            else:
                part_values = [values[index] for index in indices]
                part_keys = None if keys is None else [keys[index] for index in indices]
                part_sizes = [sizes[index] for index in indices]
            runs = self._append_chunks(
                topic,
                chosen,
                info.partition_count,
                part_values,
                part_keys,
                part_sizes,
                overhead,
                budget,
                stamp,
                due,
            )
            placements.append((indices, runs))
        if self._acks == -1:
            failures = self._flush_logs(due)
            if failures:
                raise next(iter(failures.values()))
        elif due:
            self._request_log_flushes(due)
        _appended.notify()
        return placements

    def _append_chunks(
        self,
        topic: str,
        partition: int,
        partitions: int,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        sizes: list[int],
        overhead: int,
        budget: int,
        stamp: int,
        due: dict[PartitionLog, int],
    ) -> list[_Run]:
        """Encode and append `values` to one partition (-1: sticky, over `partitions`) in
        batches of `budget` bytes; returns where each batch went and notes in `due` the fsyncs
        the flush policy asks for."""
        ends = list(accumulate(map(overhead.__add__, sizes)))
        runs: list[_Run] = []
        logs: dict[int, tuple[PartitionLog, Compression]] = {}
        start = 0
        count = len(values)
        while start < count:
            before = ends[start - 1] if start else 0
            end = bisect.bisect_right(ends, before + budget, lo=start)
            end = min(max(end, start + 1), start + limits.RECORDS_PER_BATCH_MAX)
            chosen = partition
            if chosen < 0 and partitions == 1:
                chosen = 0
            elif chosen < 0:
                with self._condition:
                    sticky = self._sticky_partition(topic, partitions)
                    chosen = sticky.partition()
                    sticky.next_batch()
            if chosen not in logs:
                log = self._manager.partition(topic, chosen)
                logs[chosen] = (log, self._codec(log.config))
            log, codec = logs[chosen]
            batch = encode_values_batch(
                values[start:end],
                None if keys is None else keys[start:end],
                timestamp=stamp,
                compression=codec,
            )
            result = log.append(batch, wait_for_flush=False)
            if result.flush_due:
                due[log] = max(due.get(log, 0), result.last_offset + 1)
            invariant(
                result.last_offset - result.base_offset == end - start - 1,
                "an appended batch keeps its record count",
            )
            runs.append(
                (
                    chosen,
                    result.base_offset if self._acks != 0 else -1,
                    end - start,
                    stamp if result.log_append_time_ms == -1 else result.log_append_time_ms,
                )
            )
            start = end
        return runs

    def _wait_for_queued(self, topic: str, partitions: set[int]) -> None:
        """Let queued `send` records to these partitions go first, to keep send order."""
        with self._condition:
            pending = [
                batch
                for batch in chain(self._open.values(), self._ready, self._in_flight)
                if batch.partition.topic == topic
                and (-1 in partitions or batch.partition.partition in partitions)
            ]
            if not pending:
                return
            self._flushing += 1
            self._condition.notify_all()
            try:
                while not all(batch.done for batch in pending):
                    self._condition.wait()
            finally:
                self._flushing -= 1

    def _request_log_flushes(self, due: Mapping[PartitionLog, int]) -> None:
        """Hand fsyncs to the sender: acks 0 and 1 answer without waiting for the disk."""
        with self._condition:
            for log, up_to in due.items():
                self._log_flushes[log] = max(self._log_flushes.get(log, 0), up_to)
            self._log_flushes_requested += 1
            self._start_sender()
            self._condition.notify_all()

    # --- flush and close --------------------------------------------------------------------

    @_client_errors
    def flush(self, timeout: float | None = None) -> int:
        self._check_open()
        if threading.current_thread() is self._sender:
            raise ClientError("flush() in a delivery callback would wait for itself")
        return self._wait_all(timeout)

    def _wait_all(self, timeout: float | None) -> int:
        """Wait for every record queued now (and fsyncs handed to the sender); how many are
        left when `timeout` runs out."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._condition:
            pending = [*self._open.values(), *self._ready, *self._in_flight]
            fsyncs = self._log_flushes_requested
            self._flushing += 1
            self._condition.notify_all()
            try:
                while True:
                    left = sum(len(batch.records) for batch in pending if not batch.done)
                    if left == 0 and self._log_flushes_done >= fsyncs:
                        return 0
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return left
                    self._condition.wait(remaining)
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush (within `timeout`), fail whatever is still queued, stop the sender.

        From a delivery callback (the sender thread) it only stops new sends: the sender
        appends what is queued and then ends, as it cannot wait for itself.
        """
        with self._condition:
            if self._closing:
                return
            self._closing = True
            self._condition.notify_all()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            sender = self._sender
            if sender is threading.current_thread():
                return
            if self._wait_all(timeout):
                self._abandon()
            if sender is not None:
                sender.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        finally:
            self._closed = True
            self._client.forget(self)

    def _abandon(self) -> None:
        """Fail the batches the sender has not taken: close() ran out of time."""
        with self._condition:
            batches = [*self._open.values(), *self._ready]
            self._open.clear()
            self._ready.clear()
            self._in_flight.update(batches)
        error = KafkaTimeoutError("the producer closed before these records were appended")
        for batch in batches:
            self._complete(batch, None, error)

    def __repr__(self) -> str:
        return f"EmbeddedProducer({self._client.url!r})"


def _serialize_all(
    serializer: Serializer, items: Sequence[Any], topic: str, what: str
) -> Sequence[bytes | None]:
    """Serialize every item; bytes with the bytes serializer are taken as they are."""
    if serializer is _BYTES_SERIALIZER and set(map(type, items)) <= _PLAIN_TYPES:
        return cast(Sequence[bytes | None], items)
    return [serialize(serializer, item, topic, what) for item in items]


def _lengths(items: Sequence[bytes | None]) -> list[int]:
    try:
        return list(map(len, cast(Sequence[bytes], items)))
    except TypeError:  # a None among them
        return [0 if item is None else len(item) for item in items]


# --- the consumer ------------------------------------------------------------------------------


class _Fetch:
    """One assigned partition: where reading resumes and the records read ahead of it; owned
    by its consumer, under the consumer's lock."""

    __slots__ = ("index", "log_append_time", "next_offset", "paused", "position", "records")

    def __init__(self, position: int | None) -> None:
        self.position = position  # None: take the committed offset, else auto.offset.reset
        self.records: list[Record] = []
        self.index = 0  # the next of `records` to return
        self.next_offset = 0  # where to read once `records` are used up
        self.paused = False
        self.log_append_time = False

    def drop_buffer(self) -> None:
        self.records = []
        self.index = 0


def _parse_subscription(
    topics: Sequence[str] | str,
) -> tuple[list[str] | None, re.Pattern[str] | None]:
    """Names and "^regex" patterns (librdkafka's convention) as (names, pattern)."""
    items = [topics] if isinstance(topics, str) else list(topics)
    patterns = [item for item in items if item.startswith("^")]
    names = [item for item in items if not item.startswith("^")]
    try:
        if not patterns:
            return names, None
        if not names and len(patterns) == 1:
            return None, re.compile(patterns[0])
        parts = [f"(?:{pattern})" for pattern in patterns]
        parts += [f"^{re.escape(name)}$" for name in names]
        return None, re.compile("|".join(parts))
    except re.error as error:
        raise ConfigError(f"invalid topic pattern in {items!r}: {error}") from None


class EmbeddedConsumer(Consumer):
    """Reads records from the logs of its client's data directory, alone or in a group.

    Owns its positions and read-ahead buffers (one read per partition, of at most
    `max.partition.fetch.bytes` and `fetch.max.bytes`) and, after `subscribe`, its group member. Belongs to one thread at a time, as
    Kafka's consumer does; `close` may come from another thread (a waiting poll returns empty).

    `isolation.level` read_committed reads the same as read_uncommitted: there are no
    transactions yet, so nothing is uncommitted. `check.crcs` is always on (the log checks
    every batch it decodes); `fetch.min.bytes` and `fetch.max.wait.ms` do not apply, since a
    poll returns as soon as any record is there.
    """

    def __init__(
        self,
        client: EmbeddedClient,
        config: dict[str, Any],
        key_deserializer: Deserializer,
        value_deserializer: Deserializer,
    ) -> None:
        self._client = client
        self._manager = client.manager
        self._config = config
        self._group_id: str | None = config.get("group.id")
        self._reset: str = setting(config, "auto.offset.reset")
        self._auto_commit = bool(setting(config, "enable.auto.commit")) and (
            self._group_id is not None
        )
        self._auto_commit_s: float = setting(config, "auto.commit.interval.ms") / 1000
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        self._max_poll_records: int = setting(config, "max.poll.records")
        self._read_bytes_max = min(
            setting(config, "max.partition.fetch.bytes"), setting(config, "fetch.max.bytes")
        )
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._plain = is_identity(key_deserializer) and is_identity(value_deserializer)
        self._lock = threading.RLock()
        self._fetches: dict[TopicPartition, _Fetch] = {}
        self._order: list[TopicPartition] = []  # round-robin order of `_fetches`
        self._rotation = 0
        self._mode: Literal["none", "assign", "subscribe"] = "none"
        self._member: _Member | None = None
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._on_lost: RebalanceCallback | None = None
        self._committed_by_us: dict[TopicPartition, int] = {}
        self._closed = False

    # --- state ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")

    def _need_group(self, what: str) -> str:
        if self._group_id is None:
            raise ClientError(f"{what} needs a group.id", error_code=INVALID_GROUP_ID)
        return self._group_id

    def _log(self, partition: TopicPartition) -> PartitionLog:
        return self._manager.partition(partition.topic, partition.partition)

    def _set_assignment(self, fetches: dict[TopicPartition, _Fetch]) -> None:
        for partition in set(self._fetches) ^ set(fetches):
            # Someone else may commit while it is not ours: what we committed says nothing.
            self._committed_by_us.pop(partition, None)
        self._fetches = fetches
        self._order = sorted(fetches)
        self._rotation = 0

    def _assigned(self, partition: TopicPartition) -> _Fetch:
        state = self._fetches.get(partition)
        if state is None:
            raise ClientError(
                f"{partition.topic}/{partition.partition} is not assigned to this consumer",
            )
        return state

    # --- positions --------------------------------------------------------------------------

    def _reset_offset(self, partition: TopicPartition, log: PartitionLog, bad: int | None) -> int:
        """Where auto.offset.reset puts a partition with no (or an out-of-range) position."""
        if self._reset == "earliest":
            return log.log_start_offset
        if self._reset == "latest":
            return log.high_watermark
        why = (
            "has no committed offset"
            if bad is None
            else f"offset {bad} is out of range [{log.log_start_offset}, {log.log_end_offset}]"
        )
        raise _client_error(
            OffsetOutOfRangeError(
                f"{partition.topic}/{partition.partition} {why} and auto.offset.reset is none"
            )
        )

    def _resolve(self, partitions: Iterable[TopicPartition], *, strict: bool) -> None:
        """Give unpositioned partitions their committed offset, else auto.offset.reset.

        Partitions of a missing topic stay unpositioned (tried again at each poll); with
        auto.offset.reset none, `strict` raises and otherwise they stay unpositioned too.
        """
        wanted = [tp for tp in partitions if self._fetches[tp].position is None]
        if not wanted:
            return
        committed: Mapping[TopicPartition, int | None] = {}
        if self._group_id is not None:
            committed = self._client.groups().committed(self._group_id, wanted)
        for partition in wanted:
            offset = committed.get(partition)
            if offset is not None:
                self._fetches[partition].position = offset
                continue
            try:
                log = self._log(partition)
            except UnknownTopicOrPartitionError:
                continue
            try:
                self._fetches[partition].position = self._reset_offset(partition, log, None)
            except ClientError:
                if strict:
                    raise

    def _special_offset(self, partition: TopicPartition, offset: int) -> int | None:
        if offset == OFFSET_BEGINNING:
            return self._log(partition).log_start_offset
        if offset == OFFSET_END:
            return self._log(partition).high_watermark
        return offset if offset >= 0 else None

    @_client_errors
    def assign(self, partitions: Sequence[TopicPartition] | Mapping[TopicPartition, int]) -> None:
        with self._lock:
            self._check_open()
            if self._mode == "subscribe":
                raise ClientError(
                    "assign() and subscribe() exclude each other; unsubscribe() first",
                )
            chosen = (
                dict(partitions)
                if isinstance(partitions, Mapping)
                else dict.fromkeys(partitions, OFFSET_INVALID)
            )
            fetches: dict[TopicPartition, _Fetch] = {}
            for given, offset in chosen.items():
                partition = TopicPartition(*given)
                kept = self._fetches.get(partition)
                try:
                    position = self._special_offset(partition, offset)
                except UnknownTopicOrPartitionError:
                    position = None
                if position is None and kept is not None:
                    fetches[partition] = kept  # still assigned: reading goes on where it was
                else:
                    fetches[partition] = _Fetch(position)
            self._set_assignment(fetches)
            self._mode = "assign" if fetches else "none"
            self._resolve(fetches, strict=False)

    def assignment(self) -> set[TopicPartition]:
        with self._lock:
            return set(self._fetches)

    @_client_errors
    def seek(self, partition: TopicPartition, offset: int) -> None:
        with self._lock:
            self._check_open()
            state = self._assigned(partition)
            position = self._special_offset(partition, offset)
            if position is None:
                raise ClientError(f"cannot seek to offset {offset}")
            state.position = position
            state.drop_buffer()

    @_client_errors
    def seek_to_beginning(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        with self._lock:
            for partition in self._chosen(partitions):
                self.seek(partition, OFFSET_BEGINNING)

    @_client_errors
    def seek_to_end(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        with self._lock:
            for partition in self._chosen(partitions):
                self.seek(partition, OFFSET_END)

    def _chosen(self, partitions: Sequence[TopicPartition] | None) -> list[TopicPartition]:
        self._check_open()
        return list(self._order) if partitions is None else list(partitions)

    @_client_errors
    def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        self._check_open()
        found: dict[TopicPartition, int | None] = {}
        for partition, timestamp in timestamps.items():
            hit = self._log(partition).offset_for_timestamp(timestamp)
            found[partition] = None if hit is None else hit[0]
        return found

    @_client_errors
    def position(
        self, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        with self._lock:
            chosen = [tp for tp in self._chosen(partitions) if tp in self._fetches]
            self._resolve(chosen, strict=True)
            return {
                tp: position
                for tp in chosen
                if (position := self._fetches[tp].position) is not None
            }

    @_client_errors
    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        self._check_open()
        log = self._log(partition)
        return log.log_start_offset, log.high_watermark

    # --- flow -------------------------------------------------------------------------------

    @_client_errors
    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        with self._lock:
            self._check_open()
            for partition in partitions:
                if partition in self._fetches:
                    self._fetches[partition].paused = True

    @_client_errors
    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        with self._lock:
            self._check_open()
            for partition in partitions:
                if partition in self._fetches:
                    self._fetches[partition].paused = False

    def paused(self) -> set[TopicPartition]:
        with self._lock:
            return {tp for tp, state in self._fetches.items() if state.paused}

    # --- reading ----------------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> ConsumerRecord | None:
        records = self.poll_batch(1, timeout)
        return records[0] if records else None

    @_client_errors
    def poll_batch(
        self, max_records: int | None = None, timeout: float | None = None
    ) -> list[ConsumerRecord]:
        self._check_open()
        limit = self._max_poll_records if max_records is None else max_records
        if limit < 1:
            raise ClientError(f"max_records must be at least 1, not {limit}")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            seen = _appended.count
            with self._lock:
                if self._closed:
                    return []  # closed by another thread while this one waited
                self._before_poll()
                records = self._collect(limit)
            if records:
                return records
            wait = POLL_WAIT_SLICE_MS / 1000
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = min(wait, remaining)
            _appended.wait(seen, wait)

    def _before_poll(self) -> None:
        """What Kafka's poll does besides fetching: group events, liveness, auto-commit."""
        if self._member is not None:
            self._member.poll_seen()
            self._apply_group_events(self._member)
        if self._auto_commit and time.monotonic() >= self._next_auto_commit:
            self._commit_quietly(self._positions())
            self._next_auto_commit = time.monotonic() + self._auto_commit_s

    def _collect(self, limit: int) -> list[ConsumerRecord]:
        """Up to `limit` records, taking each partition in turn, starting one further each
        call so that no partition waits behind a busy one."""
        out: list[ConsumerRecord] = []
        order = self._order
        count = len(order)
        if not count:
            return out
        start = self._rotation % count
        self._rotation = start + 1
        self._resolve([tp for tp in order if self._fetches[tp].position is None], strict=True)
        for step in range(count):
            partition = order[(start + step) % count]
            state = self._fetches[partition]
            if state.paused or state.position is None:
                continue
            if state.index >= len(state.records) and not self._fill(partition, state):
                continue
            if not self._take(partition, state, limit - len(out), out):
                break  # a bad record waits for the next poll, which raises for it
            if len(out) >= limit:
                self._rotation = start + step + 1
                break
        return out

    def _fill(self, partition: TopicPartition, state: _Fetch) -> bool:
        """Read the next records of `partition` into its buffer; whether any came."""
        position = state.position
        invariant(position is not None, "only positioned partitions are read")
        assert position is not None
        try:
            log = self._log(partition)
            try:
                found: RecordsResult | None = log.read_records(position, self._read_bytes_max)
            except OffsetOutOfRangeError:
                # Retention or DeleteRecords moved past us, or a seek went beyond the end; with
                # auto.offset.reset none this raises, at every poll until a seek.
                position = state.position = self._reset_offset(partition, log, position)
                found = self._read_again(log, position)
            if found is None:
                return False
            result = found
        except (UnknownTopicOrPartitionError, LogClosedError):
            return False  # deleted meanwhile: try again at the next poll
        state.records = result.records
        state.index = 0
        state.next_offset = result.next_offset
        state.log_append_time = log.config.message_timestamp_type == "LogAppendTime"
        if not result.records:
            state.position = max(position, result.next_offset)
            return False
        return True

    def _read_again(self, log: PartitionLog, position: int) -> RecordsResult | None:
        """A read from a freshly reset position; None if the log moved on again meanwhile."""
        try:
            return log.read_records(position, self._read_bytes_max)
        except OffsetOutOfRangeError:
            return None

    def _take(
        self, partition: TopicPartition, state: _Fetch, room: int, out: list[ConsumerRecord]
    ) -> bool:
        """Move up to `room` buffered records of `partition` to `out`, deserialized.

        A bad payload raises `DeserializationError` with the position past it, unless records
        were already taken this poll: then it stays first in line and this returns False.
        """
        records = state.records
        first = state.index
        end = min(len(records), first + room)
        topic, number = partition
        flag = state.log_append_time
        if self._plain:
            out.extend(
                [
                    _new_tuple(
                        ConsumerRecord,
                        (
                            topic,
                            number,
                            record.offset,
                            record.timestamp,
                            record.key,
                            record.value,
                            record.headers,
                            flag,
                        ),
                    )
                    for record in records[first:end]
                ]
            )
            state.index = end
            state.position = records[end - 1].offset + 1
        else:
            for index in range(first, end):
                record = records[index]
                try:
                    key = deserialize(
                        self._key_deserializer, record.key, topic, number, record.offset, "key"
                    )
                    value = deserialize(
                        self._value_deserializer,
                        record.value,
                        topic,
                        number,
                        record.offset,
                        "value",
                    )
                except HeadwaterError:
                    if out:
                        state.index = index
                        state.position = record.offset
                        return False
                    state.index = index + 1
                    state.position = record.offset + 1
                    self._buffer_used(state)
                    raise
                out.append(
                    _new_tuple(
                        ConsumerRecord,
                        (
                            topic,
                            number,
                            record.offset,
                            record.timestamp,
                            key,
                            value,
                            record.headers,
                            flag,
                        ),
                    )
                )
                state.index = index + 1
                state.position = record.offset + 1
        self._buffer_used(state)
        return True

    @staticmethod
    def _buffer_used(state: _Fetch) -> None:
        if state.index >= len(state.records):
            invariant(state.position is not None, "a partition read from has a position")
            state.position = max(cast(int, state.position), state.next_offset)
            state.drop_buffer()

    # --- groups -----------------------------------------------------------------------------

    @_client_errors
    def subscribe(
        self,
        topics: Sequence[str] | str,
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        with self._lock:
            self._check_open()
            group_id = self._need_group("subscribe()")
            if self._mode == "assign":
                raise ClientError(
                    "assign() and subscribe() exclude each other; unsubscribe() first",
                )
            names, pattern = _parse_subscription(topics)
            if names is not None and not names:
                self.unsubscribe()
                return
            for name in names or ():
                _topic_info(self._manager, name, create=True)  # Kafka's auto-create
            if self._member is None:
                self._member = self._client.groups().member(
                    group_id,
                    dict(self._config),
                    list_topics=self._topics_for_patterns,
                    partition_count=self._partition_count,
                )
            self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
            self._mode = "subscribe"
            self._member.subscribe(names, pattern)

    def _topics_for_patterns(self) -> list[str]:
        """Every topic a pattern may match: internal ones excluded, as Kafka's consumers do."""
        return [
            info.name
            for info in self._manager.topics()
            if not info.name.startswith(_INTERNAL_PREFIX)
        ]

    def _partition_count(self, topic: str) -> int:
        try:
            return self._manager.topic(topic).partition_count
        except UnknownTopicOrPartitionError:
            return 0

    @_client_errors
    def unsubscribe(self) -> None:
        with self._lock:
            self._check_open()
            error = self._leave() if self._member is not None else None
            self._set_assignment({})
            self._mode = "none"
        if error is not None:
            raise error

    def _leave(self) -> Exception | None:
        """Commit (auto-commit), revoke (callback), leave the group; a callback's error."""
        member = self._member
        invariant(member is not None, "only a member leaves")
        assert member is not None
        error: Exception | None = None
        try:
            if self._auto_commit:
                self._commit_quietly(self._positions())
            if self._fetches:
                error = self._call(self._on_revoke, sorted(self._fetches))
        finally:
            self._member = None
            self._set_assignment({})
            member.close()
        return error

    def _apply_group_events(self, member: _Member) -> None:
        """Apply the member's assignment changes in order, calling back as Kafka does; the
        member rejoins only after `events_handled`, so commits here use the old generation."""
        events = member.take_events()
        if not events:
            return
        error: Exception | None = None
        try:
            for kind, changed in events:
                partitions = sorted(TopicPartition(*tp) for tp in changed)
                if kind == "assign":
                    fetches = dict(self._fetches)
                    for partition in partitions:
                        fetches.setdefault(partition, _Fetch(None))
                    self._set_assignment(fetches)
                    self._resolve(partitions, strict=False)
                    error = error or self._call(self._on_assign, partitions)
                elif kind == "revoke":
                    if self._auto_commit:
                        self._commit_quietly(self._positions(partitions))
                    error = error or self._call(self._on_revoke, partitions)
                    self._drop(partitions)
                else:
                    invariant(kind == "lost", f"unknown group event {kind!r}")
                    # Kafka's default onPartitionsLost calls onPartitionsRevoked.
                    callback = self._on_lost if self._on_lost is not None else self._on_revoke
                    error = error or self._call(callback, partitions)
                    self._drop(partitions)
        finally:
            member.events_handled()
        if error is not None:
            raise error

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        fetches = dict(self._fetches)
        for partition in partitions:
            fetches.pop(partition, None)
        self._set_assignment(fetches)

    def _call(
        self, callback: RebalanceCallback | None, partitions: list[TopicPartition]
    ) -> Exception | None:
        if callback is None:
            return None
        try:
            callback(self, list(partitions))
        except Exception as error:
            return error
        return None

    # --- offsets ----------------------------------------------------------------------------

    def _positions(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        chosen = self._fetches if partitions is None else partitions
        return {
            tp: state.position
            for tp in chosen
            if (state := self._fetches.get(tp)) is not None and state.position is not None
        }

    def _commit(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        group_id = self._need_group("commit()")
        if not offsets:
            return {}
        for partition, offset in offsets.items():
            if offset < 0:
                raise ClientError(
                    f"cannot commit offset {offset} for {partition.topic}/{partition.partition}",
                )
        if self._member is not None:
            self._member.commit(offsets)
        else:
            self._client.groups().commit_offsets(group_id, offsets)
        self._committed_by_us.update(offsets)
        return offsets

    def _commit_quietly(self, offsets: dict[TopicPartition, int]) -> None:
        """Auto-commit: only what moved since our last commit; a failure is logged, as
        Kafka's auto-commit logs it."""
        changed = {
            tp: offset for tp, offset in offsets.items() if self._committed_by_us.get(tp) != offset
        }
        if not changed:
            return
        try:
            self._commit(changed)
        except HeadwaterError as error:
            _log.warning("auto-commit of group %s failed: %s", self._group_id, error)

    @_client_errors
    def commit(
        self,
        offsets: Mapping[TopicPartition, int] | None = None,
        *,
        asynchronous: bool = False,
    ) -> Future[dict[TopicPartition, int]] | None:
        """Commit now, in this thread (in-process, it is quick); with `asynchronous` the
        outcome comes back as an already resolved future instead of raising."""
        with self._lock:
            self._check_open()
            chosen = (
                {TopicPartition(*tp): offset for tp, offset in offsets.items()}
                if offsets is not None
                else self._positions()
            )
            if not asynchronous:
                self._commit(chosen)
                return None
            future: Future[dict[TopicPartition, int]] = Future()
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self._commit(chosen))
            except HeadwaterError as error:
                future.set_exception(_client_error(error))
            return future

    @_client_errors
    def committed(
        self, partitions: Sequence[TopicPartition], timeout: float | None = None
    ) -> dict[TopicPartition, int | None]:
        self._check_open()
        group_id = self._need_group("committed()")
        return self._client.groups().committed(group_id, [TopicPartition(*tp) for tp in partitions])

    # --- closing ----------------------------------------------------------------------------

    @_client_errors
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if self._member is not None:
                    error = self._leave()
                    if error is not None:
                        _log.error("a rebalance callback failed while closing: %s", error)
                elif self._auto_commit:
                    self._commit_quietly(self._positions())
            finally:
                self._closed = True
                self._set_assignment({})
                self._client.forget(self)
                _appended.notify()  # a poll waiting in another thread returns now

    def __repr__(self) -> str:
        return f"EmbeddedConsumer({self._client.url!r}, group_id={self._group_id!r})"


# --- the admin client --------------------------------------------------------------------------


class EmbeddedAdmin(Admin):
    """Topic and group administration of its client's data directory.

    Owns nothing but its closed flag: topics live in the log manager, groups in the directory's
    `EmbeddedGroups`. Thread-safe.
    """

    def __init__(self, client: EmbeddedClient) -> None:
        self._client = client
        self._manager = client.manager
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the admin client is closed")

    def _groups(self) -> _Groups:
        self._check_open()
        return self._client.groups()

    # --- topics -----------------------------------------------------------------------------

    @_client_errors
    def create_topics(self, topics: Sequence[NewTopic]) -> None:
        self._check_open()
        first: HeadwaterError | None = None
        for topic in topics:
            try:
                if topic.replication_factor not in (-1, 1):
                    raise ClientError(
                        f"topic {topic.name!r}: replication factor {topic.replication_factor} "
                        "is impossible on one node; use 1",
                        error_code=INVALID_REPLICATION_FACTOR,
                    )
                partitions = AUTO_CREATE_PARTITIONS if topic.partitions == -1 else topic.partitions
                self._manager.create_topic(topic.name, partitions, topic.config)
            except HeadwaterError as error:
                first = first or error
        if first is not None:
            raise first

    @_client_errors
    def delete_topics(self, names: Sequence[str]) -> None:
        self._check_open()
        first: HeadwaterError | None = None
        for name in names:
            try:
                if name.startswith(_INTERNAL_PREFIX):
                    raise InvalidTopicError(f"internal topic {name!r} cannot be deleted")
                self._manager.delete_topic(name)
            except HeadwaterError as error:
                first = first or error
        if first is not None:
            raise first

    @_client_errors
    def list_topics(self, *, internal: bool = False) -> list[str]:
        self._check_open()
        return [
            info.name
            for info in self._manager.topics()
            if internal or not info.name.startswith(_INTERNAL_PREFIX)
        ]

    @_client_errors
    def describe_topic(self, name: str) -> TopicDescription:
        self._check_open()
        logs = self._manager.partitions(name)
        return TopicDescription(
            name,
            [
                PartitionDescription(log.partition, log.log_start_offset, log.high_watermark)
                for log in logs
            ],
            internal=name.startswith(_INTERNAL_PREFIX),
        )

    @_client_errors
    def create_partitions(self, name: str, total: int) -> None:
        self._check_open()
        self._manager.create_partitions(name, total)

    @_client_errors
    def describe_configs(self, name: str) -> dict[str, str]:
        self._check_open()
        return {key: value for key, value, _, _ in self._manager.topic(name).config.describe()}

    @_client_errors
    def alter_configs(
        self,
        name: str,
        set: Mapping[str, str] | None = None,
        delete: Sequence[str] = (),
    ) -> None:
        self._check_open()
        changes: dict[str, str | None] = {key: str(value) for key, value in (set or {}).items()}
        changes.update(dict.fromkeys(delete))
        if changes:
            self._manager.alter_topic_config(name, changes)

    @_client_errors
    def delete_records(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Per partition; -1 (`OFFSET_END`) means the high watermark, as Kafka's DeleteRecords."""
        self._check_open()
        first: HeadwaterError | None = None
        for partition, offset in offsets.items():
            try:
                log = self._manager.partition(partition.topic, partition.partition)
                log.delete_records(log.high_watermark if offset == OFFSET_END else offset)
            except HeadwaterError as error:
                first = first or error
        if first is not None:
            raise first

    @_client_errors
    def watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        self._check_open()
        log = self._manager.partition(partition.topic, partition.partition)
        return log.log_start_offset, log.high_watermark

    # --- groups -----------------------------------------------------------------------------

    @_client_errors
    def list_groups(self) -> list[GroupListing]:
        return self._groups().list_groups()

    @_client_errors
    def describe_group(self, group_id: str) -> GroupDescription:
        return self._groups().describe_group(group_id)

    @_client_errors
    def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        return self._groups().list_offsets(group_id)

    @_client_errors
    def alter_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._groups().alter_offsets(
            group_id, {TopicPartition(*tp): offset for tp, offset in offsets.items()}
        )

    @_client_errors
    def delete_groups(self, group_ids: Sequence[str]) -> None:
        self._groups().delete_groups(list(group_ids))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.forget(self)

    def __repr__(self) -> str:
        return f"EmbeddedAdmin({self._client.url!r})"


__all__ = [
    "AUTO_CREATE_PARTITIONS",
    "EmbeddedAdmin",
    "EmbeddedClient",
    "EmbeddedConsumer",
    "EmbeddedProducer",
]

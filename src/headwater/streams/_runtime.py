"""The runtime: an App's topology run over the client API, the same code on every backend.

    from headwater.streams import Runner

    runner = Runner(app, "kafka://127.0.0.1:9092", commit_interval_ms=1_000)
    runner.start()               # a thread of its own; runner.stop() commits and leaves
    app.run("file:///var/lib/app", stop=event)   # or block until `event` is set

Start as many processes with the same application id as there are partitions to share: they
split the tasks through the consumer group (`group.id` = the application id), and when one dies
its tasks move to the others, which rebuild the state from the changelog topics.

What one process does (`Runner`):

Topics
    Input topics must exist (`MissingSourceTopicError`); their real partition counts compile
    the topology, which checks co-partitioning. Repartition topics (the topology's counts) and
    changelog topics (`cleanup.policy=compact`; `compact,delete` with the window's retention
    plus `windowstore.changelog.additional.retention.ms` for window stores) are created when
    missing and must otherwise have the partition count the topology needs.

Processing
    One consumer subscribes to the input and repartition topics and reads bytes; the runtime
    deserializes with the topology's deserializers (repartition topics: the codec). A record that
    cannot be deserialized fails the runner (`default.deserialization.exception.handler` "fail",
    Kafka's default) or goes, bytes and headers naming where it was, to the dead-letter topic
    (`errors.dead.letter.queue.topic.name`, default `<app>-dlq`) and is counted: never dropped
    quietly. A task reading several partitions takes them in timestamp order (the partition
    whose next record is oldest goes first, Kafka Streams' rule). Outputs are produced as they
    are drained: sinks with their serializers; repartition topics with the codec, to the
    partition the `TestDriver` picks (Kafka's murmur2 of the key's bytes: bytes as they are, str
    as UTF-8, anything else through the codec), so a repartitioned key meets the same key of an
    input topic written with a "str" or "bytes" key serializer.

Commit (at least once; every `commit.interval.ms`, on revoke and on close), in this order:
    1. flush the producer: every output record sent so far is acknowledged;
    2. write the changelog entries of each task's stores but its first, then flush;
    3. write the first store's entries, then the task's checkpoint record after them (one
       partition: they land in that order), then flush;
    4. `mark_committed` the tasks, then commit the consumer offsets (the next unprocessed offset
       of each partition).
    Offsets are committed only after the outputs and state they cover are durable. With
    transactions, steps 1-4 become one transaction (offsets sent with it) and this is exactly
    once; nothing else changes.

Checkpoints live in the changelog
    The client API commits offsets without metadata, so a task's checkpoint (JSON: its stream
    times, its input positions, and how far each of its other stores' changelogs is covered) is
    a record with the reserved key `CHECKPOINT_KEY` in the changelog partition of its first
    store (by name). Compaction keeps the newest; it sits after the entries it covers, in the same
    partition, so one read restores both. Entries after the last checkpoint (a commit cut short
    by a crash) are not applied, and the task resumes from the positions in the checkpoint, not
    from the committed offsets (which may lag it): state and position always match, so a crash
    never counts a record twice into the state. (Outputs may repeat: at least once.) The
    restoring task then rewrites those uncovered keys with their restored values, so the
    changelog agrees with itself again. A separate `<app>-checkpoints` topic would need a read of
    its own and could disagree with the changelog it describes; this way it cannot.

Rebalances
    on assign: create the tasks of the new partitions, restore each store from its changelog
    (read from the beginning to the high watermark with a separate assign-mode consumer), apply
    the checkpoint, seek to its positions. A task revoked and assigned back in the same
    rebalance (an eager rebalance revokes everything) is kept when its changelogs' high
    watermarks show nobody wrote to them in between. on revoke: commit, then set the tasks
    aside. on lost: drop the tasks without committing.

Stopping: `stop()` (or the event given to `run`) finishes the batch in hand, commits and
leaves the group. A failure, or an interrupt (Ctrl-C) that may have cut a batch in half, closes
without committing: the next start resumes from the last commit.

Limits: one processing thread per runner (run more processes); no fencing of a zombie that
lost its partitions but still writes, nor of the log cleaner compacting a committed entry away
in favour of an uncovered one before the restoring task rewrites it (transactions bring both);
processing-time windows read the wall clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import msgspec

from headwater.client._api import Admin, Client, Consumer, Producer
from headwater.client._config import KEYS, PASSTHROUGH_PREFIX, Role, normalize_key, parse_config
from headwater.client._serialization import is_identity, serialize
from headwater.client._types import (
    OFFSET_BEGINNING,
    ConsumerRecord,
    NewTopic,
    RecordMetadata,
    TopicPartition,
)
from headwater.errors import (
    ClientError,
    ConfigError,
    DeserializationError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from headwater.log.partitioner import partition_for_key
from headwater.streams._dsl import App
from headwater.streams._errors import (
    InternalTopicError,
    MissingSourceTopicError,
    StateRestoreError,
    StreamsError,
)
from headwater.streams._topology import Task, TaskId, Topology

logger = logging.getLogger("headwater.streams.runtime")

# The key of checkpoint records in changelog topics. 0xC1 is never the first byte of msgpack
# (the default codec) nor of UTF-8 text (JSON codecs), so no store key can collide with it.
CHECKPOINT_KEY = b"\xc1headwater.checkpoint"
_CHECKPOINT_VERSION = 1

# Bounds.
_RESTORE_STALL_S = 60.0  # seconds a changelog read may make no progress before it fails
_RESTORE_POLL_S = 0.2  # seconds one poll of the restore consumer waits
_RESTORE_MAX_POLL_RECORDS = 10_000  # records per poll while restoring
_FLUSH_TIMEOUT_S = 300.0  # seconds a commit waits for acknowledgements before failing
_MAX_PENDING_SENDS = 10_000  # delivery futures kept before the finished ones are checked
_PARTITION_CACHE_KEYS = 100_000  # keys whose repartition partition is remembered
_DLQ_ERROR_BYTES = 1_000  # bytes of the error message kept in a dead-letter header
_CLOSE_JOIN_S = 60.0  # seconds `stop` waits for the runner thread by default

# Kafka Streams' names and, unless a comment says otherwise, its defaults.
STREAMS_KEYS: dict[str, Any] = {
    "application.id": None,  # the App's id; given, it must be the same
    "commit.interval.ms": 30_000,  # at_least_once's default
    "poll.ms": 100,
    "processing.guarantee": "at_least_once",
    "num.stream.threads": 1,  # only 1: run more processes to use more cores
    "default.deserialization.exception.handler": "fail",  # or "dead-letter"
    "errors.dead.letter.queue.topic.name": None,  # default "<application.id>-dlq"
    "replication.factor": 1,  # of internal topics (Kafka Streams: -1, the broker's default)
    "windowstore.changelog.additional.retention.ms": 86_400_000,
    "repartition.purge.interval.ms": 30_000,
}
# Client keys the runtime sets itself.
_OWNED_KEYS = {
    "group.id": "the application id is the group id",
    "enable.auto.commit": "the runtime commits after the state is durable",
    "partition.assignment.strategy": (
        "the range assignor keeps co-partitioned partitions on one instance"
    ),
}
# Prefixes sending a client key to one client (Kafka Streams' names).
_PREFIXES = {
    "main.consumer.": ("consumer",),
    "restore.consumer.": ("restore",),
    "consumer.": ("consumer", "restore"),
    "producer.": ("producer",),
    "admin.": ("admin",),
}
_ROLE_CLIENTS = {
    Role.CONSUMER: ("consumer", "restore"),
    Role.PRODUCER: ("producer",),
    Role.ADMIN: ("admin",),
}
_CLIENT_ROLES = {
    "consumer": Role.CONSUMER,
    "restore": Role.CONSUMER,
    "producer": Role.PRODUCER,
    "admin": Role.ADMIN,
}

_checkpoint_encoder = msgspec.json.Encoder()
_checkpoint_decoder = msgspec.json.Decoder()


def _positive(key: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"config {key!r} must be an integer, not {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"config {key!r} must be an integer, not {value!r}") from None
    if number < low:
        raise ConfigError(f"config {key!r} must be at least {low}, not {value!r}")
    return number


def _replication_factor(value: Any) -> int:
    number = _positive("replication.factor", value, -1)
    if number == 0:
        raise ConfigError("config 'replication.factor' must be -1 (the broker's default) or >= 1")
    return number


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The runner's settings, checked once (`parse`); the client settings split per client.
    Immutable."""

    application_id: str
    commit_interval_ms: int = 30_000
    poll_ms: int = 100
    processing_guarantee: str = "at_least_once"
    deserialization_handler: str = "fail"
    dead_letter_topic: str = ""
    replication_factor: int = 1
    window_changelog_extra_retention_ms: int = 86_400_000
    repartition_purge_interval_ms: int = 30_000
    consumer: dict[str, Any] = field(default_factory=dict)
    restore: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    admin: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, application_id: str, config: Mapping[str, Any] | None, settings: Mapping[str, Any]
    ) -> RuntimeConfig:
        """Kafka Streams' keys (dotted, or with underscores) plus client keys: unprefixed ones
        go to every client of their role, `consumer.`/`main.consumer.`/`restore.consumer.`/
        `producer.`/`admin.` ones to that client only. Raises `ConfigError` naming the key."""
        streams = {key: value for key, value in STREAMS_KEYS.items() if value is not None}
        clients: dict[str, dict[str, Any]] = {name: {} for name in _CLIENT_ROLES}
        merged = {**(config or {}), **settings}
        for raw, value in merged.items():
            key = normalize_key(str(raw))
            if key in STREAMS_KEYS:
                streams[key] = value
                continue
            targets: tuple[str, ...] = ()
            bare = key
            for prefix, chosen in _PREFIXES.items():
                if key.startswith(prefix):
                    targets, bare = chosen, key[len(prefix) :]
                    break
            if bare in _OWNED_KEYS:
                raise ConfigError(f"config {bare!r} is set by the runtime: {_OWNED_KEYS[bare]}")
            if not targets:
                if bare.startswith(PASSTHROUGH_PREFIX):
                    targets = tuple(_CLIENT_ROLES)
                elif bare in KEYS:
                    targets = tuple(
                        name for role in KEYS[bare].roles for name in _ROLE_CLIENTS[role]
                    )
                else:
                    raise ConfigError(f"unknown streams config {key!r}")
            if bare == "group.instance.id":
                targets = tuple(name for name in targets if name == "consumer")
            for name in targets:
                clients[name][bare] = value
        for name, role in _CLIENT_ROLES.items():
            parse_config(role, clients[name])  # raises ConfigError for a bad key or value
        given_id = streams.get("application.id", application_id)
        if given_id != application_id:
            raise ConfigError(
                f"config 'application.id' is {given_id!r} but the app is {application_id!r}"
            )
        guarantee = str(streams["processing.guarantee"]).strip().lower()
        if guarantee != "at_least_once":
            raise ConfigError(
                f"config 'processing.guarantee' {guarantee!r} is not supported yet (it needs "
                "transactions); use at_least_once"
            )
        if _positive("num.stream.threads", streams["num.stream.threads"]) != 1:
            raise ConfigError(
                "config 'num.stream.threads' must be 1: start more processes with the same "
                "application id to use more cores"
            )
        handler = str(streams["default.deserialization.exception.handler"]).strip().lower()
        if handler not in ("fail", "dead-letter"):
            raise ConfigError(
                "config 'default.deserialization.exception.handler' must be 'fail' or "
                f"'dead-letter', not {handler!r}"
            )
        dead_letter = streams.get("errors.dead.letter.queue.topic.name") or f"{application_id}-dlq"
        return cls(
            application_id=application_id,
            commit_interval_ms=_positive("commit.interval.ms", streams["commit.interval.ms"]),
            poll_ms=_positive("poll.ms", streams["poll.ms"], 0),
            processing_guarantee=guarantee,
            deserialization_handler=handler,
            dead_letter_topic=str(dead_letter),
            replication_factor=_replication_factor(streams["replication.factor"]),
            window_changelog_extra_retention_ms=_positive(
                "windowstore.changelog.additional.retention.ms",
                streams["windowstore.changelog.additional.retention.ms"],
                0,
            ),
            repartition_purge_interval_ms=_positive(
                "repartition.purge.interval.ms", streams["repartition.purge.interval.ms"], 0
            ),
            consumer=clients["consumer"],
            restore=clients["restore"],
            producer=clients["producer"],
            admin=clients["admin"],
        )


@dataclass(eq=False, slots=True)
class _TaskState:
    """One active task and what the runtime tracks for it: its input partitions, the changelog
    partition of each store (the first carries its checkpoints), the next offset to process per
    input (where known), what the last checkpoint said, and each changelog partition's end as
    of our last write or read. Thread-safety: the processing thread only."""

    task: Task
    inputs: tuple[TopicPartition, ...]
    changelogs: dict[str, TopicPartition]
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    checkpointed: dict[TopicPartition, int] = field(default_factory=dict)
    changelog_end: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def carrier(self) -> TopicPartition | None:
        """The changelog partition holding this task's checkpoints (None: stateless)."""
        return next(iter(self.changelogs.values()), None)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _decode_or_none(decode: Callable[[bytes], Any]) -> Callable[[bytes | None], Any]:
    def decoder(data: bytes | None) -> Any:
        return None if data is None else decode(data)

    return decoder


def _close_tasks(states: list[_TaskState]) -> None:
    """Release what dropped tasks hold outside Python memory (RocksDB files and locks)."""
    for state in states:
        try:
            state.task.close()
        except Exception:  # a task that cannot close must not stop the others
            logger.exception("closing task %s failed", state.task.id)


class Runner:
    """Runs one App over one client: owns the topology, the consumer, the restore consumer,
    the producer, the admin client and the active tasks (and the client, when given a URL).

    `run`/`run_until` process on the calling thread, `start` on a thread of its own; either way
    one thread drives everything. Thread-safety: `stop`, `metrics` and `assigned_tasks` may be
    called from any thread (metrics are a snapshot); everything else from the driving thread.
    """

    def __init__(
        self,
        app: App,
        target: Client | str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.app = app
        self.config = RuntimeConfig.parse(app.application_id, config, settings)
        self._url = None if isinstance(target, Client) else os.fspath(target)
        self._owns_client = not isinstance(target, Client)
        self._client: Client | None = target if isinstance(target, Client) else None
        self.topology: Topology | None = None
        self._admin: Admin | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._restorer: Consumer | None = None
        self._tasks: dict[TaskId, _TaskState] = {}
        self._suspended: dict[TaskId, _TaskState] = {}  # revoked, maybe assigned back
        self._committed: dict[TopicPartition, int] = {}  # offsets this runner committed
        self._pending: list[Future[Any]] = []  # deliveries not yet checked
        self._partitions: dict[int, dict[Any, int]] = {}  # count -> key -> partition
        self._sink_counts: dict[str, int] = {}  # output topic -> partitions, per commit
        self._purged: dict[TopicPartition, int] = {}  # repartition records deleted below
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "records-consumed",
                "records-produced",
                "commits",
                "commit-failures",
                "tasks-created",
                "tasks-kept",
                "restored-records",
                "deserialization-errors",
                "dead-letter-records",
            ),
            0,
        )
        self._opened = False
        self._closed = False
        self._dirty = False  # failed: close without committing
        self._stop = threading.Event()
        self._stop_given: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lifecycle = threading.Lock()  # start/stop from different threads
        self._next_commit = 0.0
        self._next_purge = 0.0
        self._poll_s = self.config.poll_ms / 1000
        self._max_poll_records = 1_000

    # --- public -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Process on this thread until `stop` (or `self.stop()`) is set, then commit and
        close. A failure closes without committing and is raised."""
        self._stop_given = stop
        try:
            self._open()
            self._loop(None, None)
        except BaseException:
            self._dirty = True
            try:
                self.close()
            except BaseException:
                logger.exception("closing %s after a failure failed", self.app.application_id)
            raise
        self.close()

    def run_until(
        self, condition: Callable[[Runner], bool] | None = None, *, timeout: float | None = None
    ) -> bool:
        """Process on this thread until `condition(runner)` holds (True), `timeout` seconds
        pass or `stop` is called (False). Leaves the runner open: call again, or `close`."""
        if self._thread is not None:
            raise StreamsError("the runner runs on its own thread (start); use stop()")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._open()
            return self._loop(condition, deadline)
        except BaseException:
            self._dirty = True
            raise

    def start(self) -> None:
        """Set up (topics, clients: errors raise here), then process on a new thread until
        `stop`."""
        with self._lifecycle:
            if self._thread is not None or self._closed:
                raise StreamsError("the runner was already started")
            try:
                self._open()
            except BaseException:
                self._dirty = True
                self.close()
                raise
            self._thread = threading.Thread(
                target=self._run_thread, name=f"headwater-streams-{self.app.application_id}"
            )
            self._thread.start()

    def stop(self, timeout: float | None = _CLOSE_JOIN_S) -> None:
        """Stop processing, commit and close; raise what made the runner thread fail. Waits
        at most `timeout` seconds for the thread."""
        self._stop.set()
        with self._lifecycle:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise KafkaTimeoutError(f"the runner did not stop within {timeout} s")
        else:
            self.close()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Commit (unless the runner failed), leave the group, release every client."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            if self._opened and not self._dirty and self._consumer is not None:
                try:
                    self._commit()
                except BaseException:
                    self._dirty = True
                    raise
        finally:
            self._release()

    @property
    def failed(self) -> BaseException | None:
        """What stopped the runner thread, until `stop` raises it."""
        return self._error

    @property
    def running(self) -> bool:
        return self._opened and not self._closed

    def assigned_tasks(self) -> list[TaskId]:
        """The tasks this runner processes now (a snapshot)."""
        return sorted(dict(self._tasks))

    def metrics(self) -> dict[str, int]:
        """Counters since start (records consumed and produced, commits, restored changelog
        records, deserialization errors, dead-lettered records) and the active tasks'
        `<step>.late-records`. A snapshot; any thread."""
        out = dict(self._counters)
        for state in list(self._tasks.values()):
            for name, value in state.task.metrics().items():
                out[name] = out.get(name, 0) + value
        return out

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            self._dirty = True
        self.stop()

    def __repr__(self) -> str:
        return f"<Runner {self.app.application_id!r} tasks={len(self._tasks)}>"

    # --- lifecycle --------------------------------------------------------------------------

    def _run_thread(self) -> None:
        try:
            self._loop(None, None)
        except BaseException as error:
            logger.exception("streams app %s failed", self.app.application_id)
            self._error = error
            self._dirty = True
        try:
            self.close()
        except BaseException as error:
            if self._error is None:
                self._error = error

    def _open(self) -> None:
        if self._opened:
            if self._closed:
                raise StreamsError("the runner is closed")
            return
        if self._closed:
            raise StreamsError("the runner is closed")
        self._opened = True
        if self._client is None:
            from headwater.client._connect import connect

            assert self._url is not None
            self._client = connect(self._url)
        client = self._client
        config = self.config
        self._admin = client.admin(config.admin)
        self.topology = self._prepare_topics(self._admin)
        self._producer = client.producer(config.producer)
        consumer = {
            "auto.offset.reset": "earliest",  # Kafka Streams' default
            "max.poll.records": self._max_poll_records,
            **config.consumer,
            "group.id": config.application_id,
            "enable.auto.commit": False,
            "partition.assignment.strategy": "range",
        }
        self._max_poll_records = int(consumer["max.poll.records"])
        restore = {
            "auto.offset.reset": "earliest",
            "max.poll.records": _RESTORE_MAX_POLL_RECORDS,
            **config.restore,
            "enable.auto.commit": False,
        }
        self._restorer = client.consumer(restore)
        self._consumer = client.consumer(consumer)
        self._consumer.subscribe(
            sorted(self.topology.sources),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        now = time.monotonic()
        self._next_commit = now + config.commit_interval_ms / 1000
        self._next_purge = now + config.repartition_purge_interval_ms / 1000
        logger.info(
            "streams app %s started: %d sub-topologies, reading %s",
            config.application_id,
            len(self.topology.subtopologies),
            ", ".join(sorted(self.topology.sources)),
        )

    def _release(self) -> None:
        """Close every client (the consumer first: leaving the group revokes, which commits
        unless the runner failed)."""
        errors: list[BaseException] = []
        for closer in (
            self._close_consumer,
            lambda: self._restorer.close() if self._restorer is not None else None,
            lambda: self._producer.close() if self._producer is not None else None,
            lambda: self._admin.close() if self._admin is not None else None,
            lambda: (
                self._client.close() if self._client is not None and self._owns_client else None
            ),
        ):
            try:
                closer()
            except BaseException as error:
                errors.append(error)
        _close_tasks([*self._tasks.values(), *self._suspended.values()])
        self._tasks.clear()
        self._suspended.clear()
        if errors:
            raise errors[0]

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def _loop(self, condition: Callable[[Runner], bool] | None, deadline: float | None) -> bool:
        given = self._stop_given
        while not self._stop.is_set() and not (given is not None and given.is_set()):
            if condition is not None and condition(self):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._step()
        return False

    # --- topics -----------------------------------------------------------------------------

    def _prepare_topics(self, admin: Admin) -> Topology:
        """Compile with the input topics' real partition counts (checking co-partitioning),
        then create the internal topics that are missing and check the others."""
        app = self.app
        existing = set(admin.list_topics())
        inputs = sorted(
            {node.params["topic"] for node in app.nodes if node.kind in ("source", "table-source")}
        )
        missing = [topic for topic in inputs if topic not in existing]
        if missing:
            raise MissingSourceTopicError(
                f"app {app.application_id!r} reads {', '.join(map(repr, missing))}, which "
                "do not exist; create them first"
            )
        counts = {topic: len(admin.describe_topic(topic).partitions) for topic in inputs}
        topology = app.topology(counts)
        wanted: dict[str, tuple[int, dict[str, str]]] = {}
        for topic, partitions in topology.repartition_topics.items():
            wanted[topic] = (partitions, {"cleanup.policy": "delete"})
        for spec in topology.stores.values():
            if spec.retention_ms is None:
                settings = {"cleanup.policy": "compact"}
            else:
                retention = spec.retention_ms + self.config.window_changelog_extra_retention_ms
                settings = {"cleanup.policy": "compact,delete", "retention.ms": str(retention)}
            wanted[spec.changelog_topic] = (spec.partitions, settings)
        if self.config.deserialization_handler == "dead-letter":
            wanted.setdefault(self.config.dead_letter_topic, (1, {}))
        creating = [
            NewTopic(name, partitions, settings, self.config.replication_factor)
            for name, (partitions, settings) in wanted.items()
            if name not in existing
        ]
        if creating:
            # Another instance may create them first; the counts are checked below.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(creating)
            logger.info("created %s", ", ".join(topic.name for topic in creating))
        for name, (partitions, _) in wanted.items():
            if name == self.config.dead_letter_topic:
                continue
            found = len(admin.describe_topic(name).partitions)
            if found != partitions:
                raise InternalTopicError(
                    f"internal topic {name!r} has {found} partitions but the topology needs "
                    f"{partitions}; delete it (losing its state) or give the inputs back their "
                    "partition counts"
                )
        return topology

    # --- the loop ---------------------------------------------------------------------------

    def _step(self) -> None:
        """One poll: process what came, punctuate, send what the tasks produced, commit when
        due."""
        assert self._consumer is not None
        records = self._consumer.poll_batch(self._max_poll_records, self._poll_s)
        if records:
            self._process(records)
        wall = _now_ms()
        for state in self._tasks.values():
            state.task.punctuate(wall)
        self._send_outputs()
        if len(self._pending) > _MAX_PENDING_SENDS:
            self._reap()
        if time.monotonic() >= self._next_commit:
            self._commit()

    def _process(self, records: list[ConsumerRecord]) -> None:
        topology = self.topology
        assert topology is not None
        self._counters["records-consumed"] += len(records)
        by_partition: dict[tuple[str, int], list[ConsumerRecord]] = {}
        for record in records:
            where = (record[0], record[1])
            found = by_partition.get(where)
            if found is None:
                by_partition[where] = [record]
            else:
                found.append(record)
        per_task: dict[TaskId, list[tuple[str, int, list[tuple[Any, Any, int]]]]] = {}
        sources = topology.sources
        for (topic, partition), batch in by_partition.items():
            spec = sources[topic]
            task_id = TaskId(spec.subtopology, partition)
            state = self._tasks.get(task_id)
            if state is None:
                continue  # not ours any more (revoked inside this poll); the owner reads it
            state.positions[TopicPartition(topic, partition)] = batch[-1][2] + 1
            decoded = self._deserialize(topic, spec.internal, batch)
            if decoded:
                per_task.setdefault(task_id, []).append((topic, partition, decoded))
        for task_id, inputs in per_task.items():
            _feed(self._tasks[task_id].task, inputs)

    def _deserialize(
        self, topic: str, internal: bool, batch: list[ConsumerRecord]
    ) -> list[tuple[Any, Any, int]]:
        """`(key, value, timestamp)` per record; a record that fails goes to the handler."""
        topology = self.topology
        assert topology is not None
        if internal:
            key_of = value_of = _decode_or_none(topology.codec.decode)
        else:
            spec = topology.sources[topic]
            assert spec.key_deserializer is not None and spec.value_deserializer is not None
            key_of, value_of = spec.key_deserializer, spec.value_deserializer
        try:
            if is_identity(key_of):
                return [(r[4], value_of(r[5]), r[3]) for r in batch]
            return [(key_of(r[4]), value_of(r[5]), r[3]) for r in batch]
        except Exception:
            pass  # find the bad records one by one
        out: list[tuple[Any, Any, int]] = []
        for record in batch:
            try:
                out.append((key_of(record[4]), value_of(record[5]), record[3]))
            except Exception as error:
                self._bad_record(record, error)
        return out

    def _bad_record(self, record: ConsumerRecord, error: Exception) -> None:
        self._counters["deserialization-errors"] += 1
        failure = DeserializationError(
            f"cannot deserialize for {self.app.application_id!r}: {error}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        if self.config.deserialization_handler == "fail":
            raise failure from error
        assert self._producer is not None
        logger.warning("%s; sent to %s", failure, self.config.dead_letter_topic)
        headers = [
            ("headwater.dlq.topic", record.topic.encode()),
            ("headwater.dlq.partition", str(record.partition).encode()),
            ("headwater.dlq.offset", str(record.offset).encode()),
            ("headwater.dlq.error", str(error).encode()[:_DLQ_ERROR_BYTES]),
            *record.headers,
        ]
        self._pending.append(
            self._producer.send(
                self.config.dead_letter_topic,
                record.value,
                record.key,
                timestamp=record.timestamp if record.timestamp >= 0 else None,
                headers=headers,
            )
        )
        self._counters["dead-letter-records"] += 1

    # --- output -----------------------------------------------------------------------------

    def _send_outputs(self) -> None:
        for state in self._tasks.values():
            drained = state.task.drain_output()
            for topic, records in drained.items():
                self._send(topic, records)

    def _send(self, topic: str, records: Sequence[tuple[Any, Any, int]]) -> None:
        """Serialize and send one task's records for `topic`, in runs of one partition and one
        timestamp (what `send_many` takes)."""
        topology = self.topology
        producer = self._producer
        assert topology is not None and producer is not None
        sink = topology.sinks[topic]
        partitions: list[int | None]
        if sink.internal:
            encode = topology.codec.encode
            count = topology.sources[topic].partitions
            keys: list[bytes | None] = [encode(r[0]) for r in records]
            values: list[bytes | None] = [encode(r[1]) for r in records]
            partition_of = self._partition_of
            partitions = [partition_of(r[0], count) for r in records]
        else:
            assert sink.key_serializer is not None and sink.value_serializer is not None
            keys = _serialize_all(sink.key_serializer, [r[0] for r in records], topic, "key")
            values = _serialize_all(sink.value_serializer, [r[1] for r in records], topic, "value")
            # One partition: no need to hash every key for it.
            partitions = [0 if self._sink_partitions(topic) == 1 else None] * len(records)
        stamps = [r[2] for r in records]
        order: Sequence[int] = range(len(records))
        if sink.internal and len(set(partitions)) > 1:
            order = sorted(order, key=lambda i: partitions[i] or 0)  # stable: keeps offset order
        run: list[int] = []
        for index in order:
            if run and (partitions[index] != partitions[run[0]] or stamps[index] != stamps[run[0]]):
                self._send_run(topic, run, keys, values, partitions, stamps)
                run = []
            run.append(index)
        if run:
            self._send_run(topic, run, keys, values, partitions, stamps)
        self._counters["records-produced"] += len(records)

    def _send_run(
        self,
        topic: str,
        run: list[int],
        keys: list[bytes | None],
        values: list[bytes | None],
        partitions: list[int | None],
        stamps: list[int],
    ) -> None:
        assert self._producer is not None
        first = run[0]
        stamp = stamps[first]
        if len(run) == len(keys):
            run_keys, run_values = keys, values
        else:
            run_keys = [keys[i] for i in run]
            run_values = [values[i] for i in run]
        self._pending.append(
            self._producer.send_many(
                topic,
                run_values,
                run_keys,
                partition=partitions[first],
                timestamp=stamp if stamp >= 0 else None,
            )
        )

    def _sink_partitions(self, topic: str) -> int:
        """The partition count of an output topic, looked up once per commit interval."""
        count = self._sink_counts.get(topic)
        if count is None:
            assert self._producer is not None
            count = self._sink_counts[topic] = len(self._producer.partitions_for(topic))
        return count

    def _partition_of(self, key: Any, count: int) -> int:
        """The `TestDriver`'s rule: Kafka's partitioner over bytes as they are, str as UTF-8,
        anything else through the codec; a None key goes to partition 0."""
        if count == 1 or key is None:
            return 0
        cache = self._partitions.setdefault(count, {})
        found = cache.get(key)
        if found is None:
            if isinstance(key, bytes):
                data = key
            elif isinstance(key, str):
                data = key.encode()
            else:
                assert self.topology is not None
                data = self.topology.codec.encode(key)
            found = partition_for_key(data, count)
            if len(cache) >= _PARTITION_CACHE_KEYS:
                cache.clear()  # bounded: a cache, refilled on demand
            cache[key] = found
        return found

    def _reap(self) -> None:
        """Drop the finished deliveries, raising the first failure."""
        still: list[Future[Any]] = []
        for future in self._pending:
            if future.done():
                error = future.exception()
                if error is not None:
                    raise error
            else:
                still.append(future)
        self._pending = still

    def _flush(self) -> None:
        """Wait until every record sent so far is acknowledged; raise the first failure."""
        assert self._producer is not None
        left = self._producer.flush(_FLUSH_TIMEOUT_S)
        if left:
            raise KafkaTimeoutError(
                f"{left} records were not acknowledged within {_FLUSH_TIMEOUT_S:.0f} s"
            )
        pending, self._pending = self._pending, []
        for future in pending:
            error = future.exception(timeout=_FLUSH_TIMEOUT_S)
            if error is not None:
                raise error

    # --- commit -----------------------------------------------------------------------------

    def _commit(self) -> None:
        """Outputs durable, then changelogs, then checkpoints, then offsets (see the module
        docstring)."""
        if self._consumer is None or self._producer is None:
            return
        self._send_outputs()
        self._flush()
        encode = self._encode_entries
        dirty: list[tuple[_TaskState, list[tuple[bytes | None, bytes | None]]]] = []
        others: list[tuple[_TaskState, TopicPartition, Future[list[RecordMetadata]]]] = []
        for state in self._tasks.values():
            changes = state.task.changelog()
            if not changes and state.positions == state.checkpointed:
                continue
            partition = state.task.id.partition
            carrier = state.carrier
            carried: list[tuple[bytes | None, bytes | None]] = []
            for topic, entries in changes.items():
                where = TopicPartition(topic, partition)
                if where == carrier:
                    carried = encode(entries)
                    continue
                pairs = encode(entries)
                future = self._producer.send_many(
                    topic, [v for _, v in pairs], [k for k, _ in pairs], partition=partition
                )
                others.append((state, where, future))
            dirty.append((state, carried))
        if others:
            self._flush()
            for state, where, future in others:
                sent = future.result()
                state.changelog_end[where] = max(m.offset for m in sent) + 1
        checkpoints: list[tuple[_TaskState, TopicPartition, Future[RecordMetadata]]] = []
        for state, carried in dirty:
            carrier = state.carrier
            if carrier is None:
                continue
            if carried:
                self._pending.append(
                    self._producer.send_many(
                        carrier.topic,
                        [v for _, v in carried],
                        [k for k, _ in carried],
                        partition=carrier.partition,
                    )
                )
            checkpoints.append((state, carrier, self._send_checkpoint(state, carrier)))
        if checkpoints:
            self._flush()
            for state, carrier, written in checkpoints:
                state.changelog_end[carrier] = written.result().offset + 1
        for state, _ in dirty:
            state.task.mark_committed()
            state.checkpointed = dict(state.positions)
        self._commit_offsets()
        self._counters["commits"] += 1
        self._sink_counts.clear()  # a topic may have grown
        now = time.monotonic()
        self._next_commit = now + self.config.commit_interval_ms / 1000
        if now >= self._next_purge:
            self._purge_repartition_topics()
            self._next_purge = now + self.config.repartition_purge_interval_ms / 1000

    def _encode_entries(
        self, entries: list[tuple[Any, Any]]
    ) -> list[tuple[bytes | None, bytes | None]]:
        assert self.topology is not None
        encode = self.topology.codec.encode
        return [(encode(k), None if v is None else encode(v)) for k, v in entries]

    def _send_checkpoint(
        self, state: _TaskState, carrier: TopicPartition
    ) -> Future[RecordMetadata]:
        assert self._producer is not None
        value = {
            "version": _CHECKPOINT_VERSION,
            "task": str(state.task.id),
            "offsets": {tp.topic: offset for tp, offset in sorted(state.positions.items())},
            "times": state.task.checkpoint(),
            "changelogs": {
                tp.topic: state.changelog_end.get(tp, 0)
                for tp in state.changelogs.values()
                if tp != carrier
            },
        }
        return self._producer.send(
            carrier.topic,
            _checkpoint_encoder.encode(value),
            CHECKPOINT_KEY,
            partition=carrier.partition,
        )

    def _commit_offsets(self) -> None:
        """Commit each processed partition's next offset. A refused commit (a rebalance moved
        the partition) is logged, not raised: the checkpoints already cover the state, and
        the next poll hands the partition over."""
        assert self._consumer is not None
        offsets = {
            tp: offset
            for state in self._tasks.values()
            for tp, offset in state.positions.items()
            if self._committed.get(tp) != offset
        }
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except ClientError as error:
            self._counters["commit-failures"] += 1
            logger.warning("offset commit of %s failed: %s", self.app.application_id, error)
            return
        self._committed.update(offsets)

    def _purge_repartition_topics(self) -> None:
        """Delete repartition records below the committed offsets (Kafka Streams does too):
        they were read and their effects are durable."""
        assert self.topology is not None and self._admin is not None
        internal = self.topology.repartition_topics
        below = {
            tp: offset
            for tp, offset in self._committed.items()
            if tp.topic in internal and self._purged.get(tp) != offset
        }
        if not below:
            return
        try:
            self._admin.delete_records(below)
        except ClientError as error:
            logger.debug("purging repartition records failed: %s", error)
            return
        self._purged.update(below)

    # --- rebalances -------------------------------------------------------------------------

    def _task_ids(self, partitions: Sequence[TopicPartition]) -> set[TaskId]:
        assert self.topology is not None
        sources = self.topology.sources
        return {
            TaskId(sources[tp.topic].subtopology, tp.partition)
            for tp in partitions
            if tp.topic in sources
        }

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Create (or keep) the tasks of the new partitions, restore their state and move the
        consumer to their checkpointed positions."""
        fresh: list[_TaskState] = []
        ready: list[_TaskState] = []
        for task_id in sorted(self._task_ids(partitions)):
            if task_id in self._tasks:
                continue
            kept = self._suspended.pop(task_id, None)
            if kept is not None and self._unchanged(kept):
                ready.append(kept)
                self._counters["tasks-kept"] += 1
            else:
                if kept is not None:
                    _close_tasks([kept])  # its store files are reopened by the fresh task
                fresh.append(self._new_state(task_id))
        # Assigned elsewhere: their state is someone else's now.
        _close_tasks(list(self._suspended.values()))
        self._suspended.clear()
        self._restore(fresh)
        assigned = set(consumer.assignment())
        for state in ready:  # our commit on revoke put the group there, unless it failed
            self._tasks[state.task.id] = state
            for tp, offset in state.positions.items():
                if tp in assigned and self._committed.get(tp) != offset:
                    consumer.seek(tp, offset)
        for state in fresh:  # the checkpoint, not the committed offset, matches the state
            self._tasks[state.task.id] = state
            for tp, offset in state.positions.items():
                if tp in assigned:
                    consumer.seek(tp, offset)
        self._committed = {tp: o for tp, o in self._committed.items() if tp in assigned}
        if fresh or ready:
            logger.info(
                "%s: tasks %s assigned (%d new, restored from changelogs; %d kept)",
                self.app.application_id,
                ", ".join(str(state.task.id) for state in (*ready, *fresh)),
                len(fresh),
                len(ready),
            )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit, then set the revoked tasks aside (an eager rebalance may hand them back)."""
        revoked = self._task_ids(partitions)
        if not self._dirty:
            try:
                self._commit()
            except BaseException:
                self._dirty = True
                raise
        for task_id in revoked:
            state = self._tasks.pop(task_id, None)
            if state is not None and not self._dirty:
                self._suspended[task_id] = state

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Another instance may own these already: drop the tasks, commit nothing."""
        for task_id in self._task_ids(partitions):
            dropped = [self._tasks.pop(task_id, None), self._suspended.pop(task_id, None)]
            _close_tasks([state for state in dropped if state is not None])
        for tp in partitions:
            self._committed.pop(tp, None)
        logger.warning("%s: partitions lost: %s", self.app.application_id, partitions)

    def _unchanged(self, state: _TaskState) -> bool:
        """Whether nobody wrote to the task's changelogs since this runner last did."""
        assert self._restorer is not None
        for tp in state.changelogs.values():
            if self._restorer.watermarks(tp)[1] != state.changelog_end.get(tp, 0):
                return False
        return True

    def _new_state(self, task_id: TaskId) -> _TaskState:
        topology = self.topology
        assert topology is not None
        task = topology.create_task(task_id, wall_clock_ms=_now_ms())
        sub = topology.subtopologies[task_id.subtopology]
        inputs = tuple(
            TopicPartition(topic, task_id.partition)
            for topic in sub.source_topics
            if task_id.partition < topology.sources[topic].partitions
        )
        changelogs = {
            name: TopicPartition(topology.stores[name].changelog_topic, task_id.partition)
            for name in sorted(task.stores)
        }
        self._counters["tasks-created"] += 1
        return _TaskState(task, inputs, changelogs)

    # --- restore ----------------------------------------------------------------------------

    def _restore(self, states: list[_TaskState]) -> None:
        """Rebuild the stores of `states` from their changelogs, apply their checkpoints, and
        rewrite what a cut-short commit left uncovered."""
        restorer = self._restorer
        assert restorer is not None
        ends: dict[TopicPartition, int] = {}
        for state in states:
            for tp in state.changelogs.values():
                low, high = restorer.watermarks(tp)
                state.changelog_end[tp] = high
                if high > low:
                    ends[tp] = high
        logs = self._read_changelogs(ends)
        repairs: list[tuple[_TaskState, TopicPartition, list[bytes]]] = []
        for state in states:
            repairs.extend(self._rebuild(state, logs))
        if repairs:
            self._repair(repairs)

    def _read_changelogs(
        self, ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, list[tuple[int, bytes | None, bytes | None]]]:
        """Every record of each partition below its end, in offset order."""
        if not ends:
            return {}
        restorer = self._restorer
        assert restorer is not None
        logs: dict[TopicPartition, list[tuple[int, bytes | None, bytes | None]]] = {
            tp: [] for tp in ends
        }
        remaining = dict(ends)
        restorer.assign(dict.fromkeys(ends, OFFSET_BEGINNING))
        progress_at = time.monotonic()
        try:
            while remaining:
                batch = restorer.poll_batch(timeout=_RESTORE_POLL_S)
                done: list[TopicPartition] = []
                if batch:
                    progress_at = time.monotonic()
                    for record in batch:
                        tp = TopicPartition(record[0], record[1])
                        end = remaining.get(tp)
                        if end is None:
                            continue
                        offset = record[2]
                        if offset < end:
                            logs[tp].append((offset, record[4], record[5]))
                        if offset + 1 >= end:
                            del remaining[tp]
                            done.append(tp)
                else:
                    positions = restorer.position(sorted(remaining))
                    for tp, position in positions.items():
                        if position >= remaining[tp]:
                            del remaining[tp]  # the tail was compacted away
                            done.append(tp)
                    if remaining and time.monotonic() - progress_at > _RESTORE_STALL_S:
                        raise StateRestoreError(
                            f"restoring {self.app.application_id!r} made no progress for "
                            f"{_RESTORE_STALL_S:.0f} s on {sorted(remaining)}"
                        )
                if done and remaining:
                    restorer.pause(done)
        finally:
            restorer.assign([])
        return logs

    def _rebuild(
        self,
        state: _TaskState,
        logs: dict[TopicPartition, list[tuple[int, bytes | None, bytes | None]]],
    ) -> list[tuple[_TaskState, TopicPartition, list[bytes]]]:
        """Apply what the last checkpoint covers; return the uncovered keys per changelog."""
        task = state.task
        carrier = state.carrier
        if carrier is None:
            task.restore_checkpoint({})
            return []
        assert self.topology is not None
        decode = self.topology.codec.decode
        carried = logs.get(carrier, [])
        last = -1
        for index in range(len(carried) - 1, -1, -1):
            if carried[index][1] == CHECKPOINT_KEY:
                last = index
                break
        checkpoint: dict[str, Any] = {}
        if last >= 0:
            try:
                checkpoint = _checkpoint_decoder.decode(carried[last][2] or b"")
                if not isinstance(checkpoint, dict) or checkpoint.get("version") != 1:
                    raise ValueError(f"unknown checkpoint {checkpoint!r}")
            except (ValueError, msgspec.DecodeError) as error:
                raise StateRestoreError(
                    f"task {task.id} of {self.app.application_id!r}: unreadable checkpoint in "
                    f"{carrier.topic}/{carrier.partition}: {error}"
                ) from error
        covered_ends: dict[str, int] = checkpoint.get("changelogs", {})
        repairs: list[tuple[_TaskState, TopicPartition, list[bytes]]] = []
        restored = 0
        for name, tp in state.changelogs.items():
            records = logs.get(tp, [])
            if tp == carrier:
                applied = [r for r in records[: max(last, 0)] if r[1] != CHECKPOINT_KEY]
                uncovered = [r for r in records[last + 1 :] if r[1] != CHECKPOINT_KEY]
            else:
                end = int(covered_ends.get(tp.topic, 0))
                applied = [r for r in records if r[0] < end]
                uncovered = [r for r in records if r[0] >= end]
            task.restore(
                name,
                [
                    (decode(k), None if v is None else decode(v))
                    for _, k, v in applied
                    if k is not None
                ],
            )
            restored += len(applied)
            if uncovered:
                keys = list(dict.fromkeys(k for _, k, _ in uncovered if k is not None))
                repairs.append((state, tp, keys))
        task.restore_checkpoint({str(k): int(v) for k, v in checkpoint.get("times", {}).items()})
        inputs = set(state.inputs)
        state.positions = {
            tp: int(offset)
            for topic, offset in checkpoint.get("offsets", {}).items()
            if (tp := TopicPartition(topic, task.id.partition)) in inputs
        }
        state.checkpointed = dict(state.positions)
        self._counters["restored-records"] += restored
        return repairs

    def _repair(self, repairs: list[tuple[_TaskState, TopicPartition, list[bytes]]]) -> None:
        """Rewrite keys written after the last checkpoint with their restored values (None:
        a tombstone), then checkpoint again, so the changelog agrees with the state."""
        producer = self._producer
        assert producer is not None and self.topology is not None
        decode, encode = self.topology.codec.decode, self.topology.codec.encode
        sent: list[tuple[_TaskState, TopicPartition, Future[list[RecordMetadata]]]] = []
        for state, tp, keys in repairs:
            name = next(n for n, where in state.changelogs.items() if where == tp)
            store = state.task.stores[name]
            values: list[bytes | None] = []
            for key in keys:
                value = store.get(decode(key))
                values.append(None if value is None else encode(value))
            sent.append(
                (state, tp, producer.send_many(tp.topic, values, keys, partition=tp.partition))
            )
            logger.warning(
                "%s: task %s: %d keys of %s were written after the last checkpoint (a commit "
                "cut short); rewritten with their committed values",
                self.app.application_id,
                state.task.id,
                len(keys),
                tp.topic,
            )
        self._flush()
        for state, tp, future in sent:
            state.changelog_end[tp] = max(m.offset for m in future.result()) + 1
        checkpoints = []
        for state in dict.fromkeys(state for state, _, _ in sent):
            carrier = state.carrier
            assert carrier is not None
            checkpoints.append((state, carrier, self._send_checkpoint(state, carrier)))
        self._flush()
        for state, carrier, checkpoint in checkpoints:
            state.changelog_end[carrier] = checkpoint.result().offset + 1


def _serialize_all(
    serializer: Callable[[Any], bytes | None], items: list[Any], topic: str, what: str
) -> list[bytes | None]:
    """`serializer` over `items`; a failure raised as `SerializationError` naming the topic."""
    try:
        return [serializer(item) for item in items]
    except Exception:
        return [serialize(serializer, item, topic, what) for item in items]


def _feed(task: Task, inputs: list[tuple[str, int, list[tuple[Any, Any, int]]]]) -> None:
    """Process each partition's records in offset order and, across partitions, oldest first:
    the partition whose next record has the lowest timestamp goes, as far as its records stay
    at or below every other partition's next timestamp (Kafka Streams' rule, in runs)."""
    if len(inputs) == 1:
        topic, partition, records = inputs[0]
        task.process(topic, partition, records)
        return
    heads = [0] * len(inputs)
    while True:
        live = [i for i in range(len(inputs)) if heads[i] < len(inputs[i][2])]
        if not live:
            return
        chosen = min(live, key=lambda i: inputs[i][2][heads[i]][2])
        others = [inputs[i][2][heads[i]][2] for i in live if i != chosen]
        topic, partition, records = inputs[chosen]
        start = heads[chosen]
        end = start + 1
        if not others:
            end = len(records)
        else:
            bound = min(others)
            while end < len(records) and records[end][2] <= bound:
                end += 1
        heads[chosen] = end
        task.process(topic, partition, records[start:end])


def run(
    app: App,
    target: Client | str | os.PathLike[str],
    *,
    stop: threading.Event | None = None,
    config: Mapping[str, Any] | None = None,
    **settings: Any,
) -> None:
    """Run `app` over `target` (a client, or a URL for `headwater.connect`) on this thread
    until `stop` is set; `settings` as `Runner` takes them (`commit_interval_ms=1000`)."""
    Runner(app, target, config, **settings).run(stop)


__all__ = ["CHECKPOINT_KEY", "STREAMS_KEYS", "Runner", "RuntimeConfig", "run"]

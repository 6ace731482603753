"""`headwater topic ... --brokers HOST:PORT`: the topic commands over the Kafka protocol.

The same commands, the same output and the same exit statuses as with a data directory, but
through librdkafka (confluent-kafka) against any Kafka broker: `headwater serve` or Apache Kafka.
Every librdkafka error stops here and becomes one "error: ..." line and exit status 1; its own
logging is dropped, so nothing else reaches the terminal.

What differs from a data directory: the broker decides (its defaults, its validation, its error
messages), partition sizes are not shown (no DescribeLogDirs), and consumers read with `assign()`
only (no consumer group is joined and no offsets are committed).
"""

from __future__ import annotations

import base64
import logging
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)

# The admin package defines these in private modules and imports them without re-exporting.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
    TopicDescription,
)

from headwater.cli._common import error_line, reporting_errors
from headwater.cli._consume import RecordFormat, _silence_stdout
from headwater.cli._produce import _chunks, _Ticker
from headwater.errors import ConfigError, HeadwaterError
from headwater.log.record_batch import Record

# How long to try to reach the brokers before giving up (the first metadata request).
CONNECT_TIMEOUT_S = 10.0
# Per attempt while connecting: short, so a refused connection is noticed quickly.
_CONNECT_ATTEMPT_S = 0.5
# Each admin request once connected, and the broker-side wait for a change to propagate.
_REQUEST_TIMEOUT_S = 30.0
# A record not acknowledged within this is reported as failed (librdkafka retries until then).
_DELIVERY_TIMEOUT_MS = 60_000
_LINGER_MS = 5
# A consume that receives nothing at all for this long gives up.
_IDLE_TIMEOUT_S = 30.0
_CONSUME_BATCH = 1000
_CONSUME_WAIT_S = 0.1
# Distinct delivery errors printed in full; the rest are only counted.
_DISTINCT_ERRORS_SHOWN = 5

_GROUP_ID = "headwater-cli"  # required by librdkafka; never joined (assign only), never committed


class RemoteError(HeadwaterError):
    """A broker refused a request, or could not be reached."""


# --- connecting --------------------------------------------------------------------------------


def _quiet_logger() -> logging.Logger:
    """A logger librdkafka may write to that drops everything (it would print to stderr)."""
    logger = logging.getLogger("headwater.cli.librdkafka")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def check_brokers(brokers: str) -> str:
    """Validate `HOST:PORT[,HOST:PORT...]`; return it without blanks."""
    addresses = [address.strip() for address in brokers.split(",")]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"broker address {address!r} is not HOST:PORT")
    return ",".join(addresses)


def _error_text(error: KafkaError) -> str:
    """librdkafka's message without its address prefix and "(after 0ms in state X)" suffix."""
    text = error.str()
    head, found, tail = text.partition("/bootstrap: ")
    if found and " " not in head:
        text = tail
    before, _, after = text.rpartition(" (after ")
    if before and after.endswith(")") and " in state " in after:
        text = before
    return text


def _kafka_error(exception: KafkaException) -> KafkaError | None:
    error = exception.args[0] if exception.args else None
    return error if isinstance(error, KafkaError) else None


def _describe(exception: KafkaException) -> str:
    error = _kafka_error(exception)
    return _error_text(error) if error is not None else str(exception)


def _code(exception: KafkaException) -> int | None:
    error = _kafka_error(exception)
    return error.code() if error is not None else None


@contextmanager
def _kafka_errors(context: str) -> Iterator[None]:
    """Turn a librdkafka exception raised inside into a `RemoteError` saying what failed."""
    try:
        yield
    except KafkaException as exception:
        if _code(exception) == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise RemoteError(f"{context}: unknown topic or partition") from None
        raise RemoteError(f"{context}: {_describe(exception)}") from None


class Cluster:
    """Clients for one set of bootstrap brokers, sharing one configuration and error sink."""

    def __init__(self, brokers: str) -> None:
        self.brokers = check_brokers(brokers)
        self.errors: list[KafkaError] = []
        self.admin = AdminClient(self.config())
        self._consumer: Consumer | None = None

    def _error_cb(self, error: KafkaError) -> None:
        self.errors.append(error)
        del self.errors[:-20]

    def config(self, **extra: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.brokers,
            "client.id": "headwater-cli",
            "logger": _quiet_logger(),
            "error_cb": self._error_cb,
            "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
            **extra,
        }

    def connect(self) -> dict[str, Any]:
        """Fetch the cluster's topics, failing within `CONNECT_TIMEOUT_S` if no broker answers.

        Metadata is asked for in short attempts; between them the error callbacks are served, so
        "all brokers are down" (a refused connection, an unknown host) ends the wait early.
        """
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            try:
                metadata = self.admin.list_topics(
                    timeout=max(0.05, min(_CONNECT_ATTEMPT_S, remaining))
                )
            except KafkaException as exception:
                self.admin.poll(0)
                down = any(error.code() == KafkaError._ALL_BROKERS_DOWN for error in self.errors)
                if down or time.monotonic() >= deadline:
                    self._unreachable(_describe(exception))
                continue
            topics: dict[str, Any] = metadata.topics
            return topics

    def _unreachable(self, fallback: str) -> NoReturn:
        reasons = [
            error
            for error in self.errors
            if error.code() not in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT)
        ]
        reason = _error_text(reasons[-1]) if reasons else fallback
        raise RemoteError(f"cannot reach brokers {self.brokers}: {reason}")

    def topic(self, name: str) -> TopicDescription:
        """Describe one topic; raise "unknown topic" (as a data directory does) if it is missing.

        The topic list is checked first: asking for one topic's metadata by name could create it
        on a broker that auto-creates topics.
        """
        if name not in self.connect():
            raise RemoteError(f"unknown topic {name!r}")
        return self.describe_topics([name])[name]

    def describe_topics(self, names: Sequence[str]) -> dict[str, TopicDescription]:
        if not names:
            return {}
        futures = self.admin.describe_topics(
            TopicCollection(list(names)), request_timeout=_REQUEST_TIMEOUT_S
        )
        result: dict[str, TopicDescription] = {}
        for name, future in futures.items():
            with _kafka_errors(f"cannot describe topic {name!r}"):
                result[name] = future.result()
        return result

    def describe_configs(self, names: Sequence[str]) -> dict[str, dict[str, ConfigEntry]]:
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
        if not resources:
            return {}
        futures = self.admin.describe_configs(resources, request_timeout=_REQUEST_TIMEOUT_S)
        result: dict[str, dict[str, ConfigEntry]] = {}
        for resource, future in futures.items():
            with _kafka_errors(f"cannot describe the configs of topic {resource.name!r}"):
                result[resource.name] = future.result()
        return result

    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                self.config(
                    **{
                        "group.id": _GROUP_ID,
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "enable.partition.eof": True,
                        "auto.offset.reset": "earliest",
                    }
                )
            )
        return self._consumer

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        with _kafka_errors(f"cannot read the offsets of {topic}/{partition}"):
            low, high = self.consumer().get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_REQUEST_TIMEOUT_S, cached=False
            )
        return int(low), int(high)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@contextmanager
def open_cluster(brokers: str) -> Iterator[Cluster]:
    """A connected `Cluster`, closed at the end; errors become "error: ..." and exit 1."""
    with reporting_errors():
        cluster = Cluster(brokers)
        try:
            cluster.connect()
            yield cluster
        finally:
            cluster.close()


def _results(futures: Mapping[str, Future[Any]]) -> Iterator[tuple[str, KafkaException | None]]:
    """Each future's name and its failure (None when it succeeded), in order."""
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exception:
            yield name, exception
        else:
            yield name, None


def _topic_error(name: str, exception: KafkaException, action: str) -> str:
    code = _code(exception)
    if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return f"unknown topic {name!r}"
    if code == KafkaError.TOPIC_ALREADY_EXISTS:
        return f"topic {name!r} already exists"
    return f"cannot {action} topic {name!r}: {_describe(exception)}"


def topic_id_text(description: TopicDescription) -> str:
    """A topic id as a UUID, as a data directory shows it (librdkafka prints base64)."""
    text = str(description.topic_id).replace("-", "+").replace("_", "/")
    try:
        return str(uuid.UUID(bytes=base64.b64decode(text + "=" * (-len(text) % 4))))
    except ValueError:
        return str(description.topic_id)


# --- create, delete, alter ---------------------------------------------------------------------


def create_topics(
    brokers: str,
    names: Sequence[str],
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str],
) -> None:
    failed = False
    with open_cluster(brokers) as cluster:
        futures = cluster.admin.create_topics(
            [
                NewTopic(name, partitions, replication_factor, config=dict(configs))
                for name in dict.fromkeys(names)
            ],
            operation_timeout=_REQUEST_TIMEOUT_S,
            request_timeout=_REQUEST_TIMEOUT_S,
        )
        for name, exception in _results(futures):
            if exception is not None:
                error_line(_topic_error(name, exception, "create"))
                failed = True
                continue
            plural = "partition" if partitions == 1 else "partitions"
            typer.echo(f"created topic {name} ({partitions} {plural})")
    if failed:
        raise typer.Exit(1)


def delete_topics(brokers: str, names: Sequence[str]) -> None:
    failed = False
    with open_cluster(brokers) as cluster:
        futures = cluster.admin.delete_topics(
            list(dict.fromkeys(names)),
            operation_timeout=_REQUEST_TIMEOUT_S,
            request_timeout=_REQUEST_TIMEOUT_S,
        )
        for name, exception in _results(futures):
            if exception is not None:
                error_line(_topic_error(name, exception, "delete"))
                failed = True
                continue
            typer.echo(f"deleted topic {name}")
    if failed:
        raise typer.Exit(1)


def alter_config(brokers: str, name: str, changes: Mapping[str, str | None]) -> None:
    entries = [
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        if value is not None
        else ConfigEntry(key, None, incremental_operation=AlterConfigOpType.DELETE)
        for key, value in changes.items()
    ]
    with open_cluster(brokers) as cluster:
        if name not in cluster.connect():
            raise RemoteError(f"unknown topic {name!r}")
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
        futures = cluster.admin.incremental_alter_configs(
            [resource], request_timeout=_REQUEST_TIMEOUT_S
        )
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exception:
                raise RemoteError(_topic_error(name, exception, "alter")) from None
    for key, value in changes.items():
        if value is None:
            typer.echo(f"{name}: restored {key} to its default")
        else:
            typer.echo(f"{name}: set {key}={value}")


def add_partitions(brokers: str, name: str, num: int) -> None:
    with open_cluster(brokers) as cluster:
        current = len(cluster.topic(name).partitions)
        total = current + num
        futures = cluster.admin.create_partitions(
            [NewPartitions(name, total)],
            operation_timeout=_REQUEST_TIMEOUT_S,
            request_timeout=_REQUEST_TIMEOUT_S,
        )
        for _, exception in _results(futures):
            if exception is not None:
                raise RemoteError(_topic_error(name, exception, "add partitions to"))
    typer.echo(f"added {num} partitions to {name}: now {total}")


# --- list and describe -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicSummary:
    name: str
    topic_id: str
    partitions: int
    cleanup_policy: str


def list_topics(brokers: str) -> list[TopicSummary]:
    """Every topic with its id, partition count and cleanup policy, sorted by name."""
    with open_cluster(brokers) as cluster:
        names = sorted(cluster.connect())
        descriptions = cluster.describe_topics(names)
        configs = cluster.describe_configs(names)
    summaries = []
    for name in names:
        entry = configs[name].get("cleanup.policy")
        summaries.append(
            TopicSummary(
                name,
                topic_id_text(descriptions[name]),
                len(descriptions[name].partitions),
                (entry.value if entry is not None else None) or "delete",
            )
        )
    return summaries


@dataclass(frozen=True, slots=True)
class TopicDetails:
    name: str
    topic_id: str
    partitions: list[dict[str, int]]
    configs: list[dict[str, str]]


def _source(entry: ConfigEntry) -> str:
    """A topic override, or a default (Kafka's or the broker's)."""
    source: object = entry.source
    if isinstance(source, ConfigSource):
        source = source.value
    return "override" if source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value else "default"


def describe_topic(brokers: str, name: str) -> TopicDetails:
    with open_cluster(brokers) as cluster:
        description = cluster.topic(name)
        partitions = []
        for info in sorted(description.partitions, key=lambda info: info.id):
            low, high = cluster.watermarks(name, info.id)
            partitions.append(
                {
                    "partition": info.id,
                    "leader": info.leader.id if info.leader is not None else -1,
                    "log_start_offset": low,
                    "high_watermark": high,
                }
            )
        entries = cluster.describe_configs([name])[name]
    configs = [
        {"name": key, "value": entry.value or "", "source": _source(entry)}
        for key, entry in sorted(entries.items())
    ]
    return TopicDetails(name, topic_id_text(description), partitions, configs)


# --- produce -----------------------------------------------------------------------------------


class _Deliveries:
    """Counts acknowledgements and failures, reporting each distinct failure once."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self._seen: set[str] = set()

    def fail(self, reason: str) -> None:
        self.failed += 1
        if reason not in self._seen and len(self._seen) < _DISTINCT_ERRORS_SHOWN:
            self._seen.add(reason)
            error_line(f"delivery failed: {reason}")

    def callback(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        partition = message.partition()
        text = _error_text(error)
        if partition is not None and partition >= 0:
            text = f"{message.topic()}/{partition}: {text}"
        self.fail(text)


def produce(
    brokers: str,
    topic: str,
    *,
    key: bytes | None,
    separator: bytes | None,
    partition: int | None,
    compression: str | None,
    headers: Sequence[tuple[str, bytes]],
) -> None:
    """Produce one record per stdin line, as the data directory's `produce` does."""
    started = time.monotonic()
    deliveries = _Deliveries()
    interrupted = False
    with open_cluster(brokers) as cluster:
        count = len(cluster.topic(topic).partitions)
        if partition is not None and partition >= count:
            raise RemoteError(f"topic {topic!r} has no partition {partition}")
        extra: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": False,
            # Kafka's Java partitioner (and the data directory's): murmur2 of the key; keyless
            # records stick to a partition per batch.
            "partitioner": "murmur2_random",
            "linger.ms": _LINGER_MS,
            "delivery.timeout.ms": _DELIVERY_TIMEOUT_MS,
        }
        if compression is not None:
            extra["compression.type"] = compression
        with _kafka_errors("cannot create a producer"):
            producer = Producer(cluster.config(**extra))
        ticker = _Ticker(topic)
        stdin = sys.stdin.buffer
        chunk_records = 1 if stdin.isatty() else _CONSUME_BATCH
        header_list: list[tuple[str, str | bytes | None]] | None = list(headers) or None
        fixed = -1 if partition is None else partition  # -1: the partitioner decides

        def send(record_key: bytes | None, value: bytes) -> None:
            while True:
                try:
                    producer.produce(
                        topic,
                        value=value,
                        key=record_key,
                        partition=fixed,
                        headers=header_list,
                        on_delivery=deliveries.callback,
                    )
                    return
                except BufferError:
                    producer.poll(0.05)  # the local queue is full: wait for acknowledgements
                except KafkaException as exception:
                    deliveries.fail(_describe(exception))
                    return

        try:
            for values in _chunks(stdin, chunk_records):
                for line in values:
                    if separator is None:
                        send(key, line)
                    else:
                        head, found, tail = line.partition(separator)
                        if found:
                            send(head, tail)
                        else:
                            send(None, line)
                producer.poll(0)
                ticker.update(deliveries.delivered)
        except KeyboardInterrupt:
            interrupted = True  # what was read is still delivered; then report how far we got
        finally:
            try:
                while producer.flush(0.1) > 0:
                    ticker.update(deliveries.delivered)
            finally:
                ticker.stop()
    elapsed = time.monotonic() - started
    plural = "record" if deliveries.delivered == 1 else "records"
    summary = f"produced {deliveries.delivered} {plural} to {topic} in {elapsed:.2f}s"
    if deliveries.failed:
        error_line(f"{summary}; {deliveries.failed} failed")
        raise typer.Exit(1)
    typer.echo(summary, err=True)
    if interrupted:
        raise typer.Exit(130)


# --- consume -----------------------------------------------------------------------------------


def _start(cluster: Cluster, spec: str, topic: str, partition: int, low: int, high: int) -> int:
    """Where to start, by the data directory's rules over the broker's watermarks: start, end,
    N, +N (after the start), -N (before the end) or @MS, clamped to [low, high].
    """
    if spec in ("start", "oldest", "beginning"):
        return low
    if spec in ("end", "newest"):
        return high
    if spec.startswith("@"):
        timestamp = int(spec[1:])
        where = f"cannot look up timestamp {timestamp} in {topic}/{partition}"
        with _kafka_errors(where):
            (found,) = cluster.consumer().offsets_for_times(
                [TopicPartition(topic, partition, timestamp)], timeout=_REQUEST_TIMEOUT_S
            )
        if found.error is not None:
            raise RemoteError(f"{where}: {found.error}")
        return high if found.offset < 0 else max(low, min(found.offset, high))
    if spec.startswith("+"):
        wanted = low + int(spec[1:])
    elif spec.startswith("-"):
        wanted = high - int(spec[1:])
    else:
        wanted = int(spec)
    return max(low, min(wanted, high))


def _record(message: Message) -> Record:
    _, timestamp = message.timestamp()
    headers = message.headers() or ()
    offset = message.offset()
    return Record(
        offset if offset is not None else -1,
        timestamp,
        message.key(),
        message.value(),
        tuple(
            (name, value.encode() if isinstance(value, str) else value)
            for name, value in (headers.items() if isinstance(headers, dict) else headers)
        ),
    )


def _read_partition(
    cluster: Cluster,
    topic: str,
    partition: int,
    start: int,
    end: int,
    remaining: int | None,
    record_format: RecordFormat,
) -> int:
    """Write the partition's records in [start, end) (at most `remaining`); return how many."""
    consumer = cluster.consumer()
    written = 0
    out = sys.stdout.buffer
    with _kafka_errors(f"cannot consume {topic}/{partition}"):
        consumer.assign([TopicPartition(topic, partition, start)])
        try:
            position = start
            idle_since = time.monotonic()
            while position < end and (remaining is None or written < remaining):
                wanted = (
                    _CONSUME_BATCH
                    if remaining is None
                    else min(_CONSUME_BATCH, remaining - written)
                )
                messages = consumer.consume(wanted, _CONSUME_WAIT_S)
                if not messages:
                    if time.monotonic() - idle_since > _IDLE_TIMEOUT_S:
                        raise RemoteError(
                            f"cannot consume {topic}/{partition}: nothing received for "
                            f"{_IDLE_TIMEOUT_S:.0f}s at offset {position}"
                        )
                    continue
                idle_since = time.monotonic()
                records = []
                for message in messages:
                    if message.partition() != partition:
                        continue  # left over from an earlier assignment
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            # Nothing more to read now: past the end we started with, or at a
                            # read_committed consumer's last stable offset.
                            position = end
                            continue
                        raise KafkaException(error)
                    offset = message.offset()
                    if offset is None or offset >= end:
                        position = end
                        continue
                    records.append(_record(message))
                    position = offset + 1
                if remaining is not None:
                    records = records[: remaining - written]
                if records:
                    out.write(record_format.render(topic, partition, records))
                    written += len(records)
        finally:
            consumer.unassign()
    return written


def consume(
    brokers: str,
    topic: str,
    *,
    spec: str,
    partitions: Sequence[int] | None,
    num: int | None,
    record_format: RecordFormat,
) -> None:
    """Print the topic's records partition by partition, up to each high watermark at start."""
    remaining = num
    broken_pipe = False
    with open_cluster(brokers) as cluster:
        count = len(cluster.topic(topic).partitions)
        selected = list(dict.fromkeys(partitions)) if partitions else list(range(count))
        for partition in selected:
            if partition >= count:
                raise RemoteError(f"topic {topic!r} has no partition {partition}")
        ranges = []
        for partition in selected:
            low, high = cluster.watermarks(topic, partition)
            ranges.append((partition, _start(cluster, spec, topic, partition, low, high), high))
        sys.stdout.flush()  # anything written as text goes before our bytes
        try:
            for partition, start, end in ranges:
                if remaining == 0:
                    break
                if start >= end:
                    continue
                written = _read_partition(
                    cluster, topic, partition, start, end, remaining, record_format
                )
                if remaining is not None:
                    remaining -= written
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            broken_pipe = True  # the reader has gone (`| head`): stop quietly
    if broken_pipe:
        _silence_stdout()


__all__ = [
    "CONNECT_TIMEOUT_S",
    "Cluster",
    "RemoteError",
    "TopicDetails",
    "TopicSummary",
    "add_partitions",
    "alter_config",
    "check_brokers",
    "consume",
    "create_topics",
    "delete_topics",
    "describe_topic",
    "list_topics",
    "produce",
    "topic_id_text",
]

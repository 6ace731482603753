"""The log manager: one data directory of many topics and partitions.

Layout (partition directories and checkpoint files as Kafka names them):
  DATA/.lock                              held with an OS file lock by the owning process
  DATA/.headwater-clean-shutdown          present only between a clean close and the next open
  DATA/recovery-point-offset-checkpoint   per partition: everything below is known durable
  DATA/log-start-offset-checkpoint        per partition: the first readable offset
  DATA/__headwater_meta/topics/NAME.json  a topic's id, partition count and config overrides
  DATA/NAME-N/                            a partition's segments

`LogManager` owns every `PartitionLog` it opened. Thread-safe: topic changes hold `_lock`
(`topic` reads without it; see there); partition logs are themselves thread-safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import msgspec

from headwater import limits
from headwater._invariant import invariant
from headwater.errors import (
    ConfigError,
    DataDirectoryLockedError,
    InvalidPartitionsError,
    InvalidTopicError,
    LogClosedError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from headwater.log._files import storage_error, sync_directory, write_atomically
from headwater.log.config import TopicConfig
from headwater.log.loader import RecoveryReport, load_partition_log
from headwater.log.partition_log import PartitionLog, now_ms

_log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CLEAN_SHUTDOWN_FILE = ".headwater-clean-shutdown"
RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_FILE = "log-start-offset-checkpoint"
META_DIRECTORY = os.path.join("__headwater_meta", "topics")
DELETED_SUFFIX = "-delete"
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
_CHECKPOINT_VERSION = 0


def validate_topic_name(name: str) -> None:
    """Kafka's rules: 1 to 249 of [a-zA-Z0-9._-], and not '.' or '..'."""
    if not name or name in (".", "..") or len(name) > limits.TOPIC_NAME_LENGTH_MAX:
        raise InvalidTopicError(
            f"invalid topic name {name!r}: 1 to {limits.TOPIC_NAME_LENGTH_MAX} characters"
        )
    if not _LEGAL_TOPIC.match(name):
        raise InvalidTopicError(
            f"invalid topic name {name!r}: only ASCII letters, digits, '.', '_' and '-'"
        )


class _TopicRecord(msgspec.Struct, frozen=True):
    name: str
    topic_id: str
    partitions: int
    configs: dict[str, str]


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    partition_count: int
    config: TopicConfig


@dataclass(slots=True)
class _Topic:
    info: TopicInfo
    partitions: list[PartitionLog] = field(default_factory=list)


def _read_checkpoint(path: str) -> dict[tuple[str, int], int]:
    """Read Kafka's checkpoint text format: version, count, then `topic partition offset` lines."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return {}
    try:
        if int(lines[0]) != _CHECKPOINT_VERSION or int(lines[1]) != len(lines) - 2:
            raise ValueError("bad header")
        result = {}
        for line in lines[2:]:
            topic, partition, offset = line.split(" ")
            result[(topic, int(partition))] = int(offset)
        return result
    except (ValueError, IndexError):
        # A checkpoint only saves recovery work; without it, recovery re-validates everything.
        _log.warning("ignoring unreadable checkpoint %s", path)
        return {}


def _format_checkpoint(entries: Mapping[tuple[str, int], int]) -> bytes:
    lines = [str(_CHECKPOINT_VERSION), str(len(entries))]
    lines += [
        f"{topic} {partition} {offset}" for (topic, partition), offset in sorted(entries.items())
    ]
    return ("\n".join(lines) + "\n").encode()


_SEGMENT_FILE = re.compile(r"^\d{20}\.(log|index|timeindex)(\.(cleaned|swap|tmp))?$")


def _only_segments(path: str) -> bool:
    try:
        return all(_SEGMENT_FILE.match(name) for name in os.listdir(path))
    except OSError:
        return False


class _DirectoryLock:
    """An exclusive `flock` on DATA/.lock, naming the holder for whoever is refused."""

    def __init__(self, data_dir: str, owner: str) -> None:
        self.path = os.path.join(data_dir, LOCK_FILE)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise DataDirectoryLockedError(
                f"data directory {data_dir} is in use by {holder}; stop it or use another --data-dir"
            ) from None
        with contextlib.suppress(
            OSError
        ):  # naming the holder is a courtesy (a full disk may refuse)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({owner})\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


class LogManager:
    """A data directory's topics and partition logs; see the module docstring."""

    def __init__(self, data_dir: str, *, owner: str | None = None) -> None:
        self.data_dir = os.path.abspath(data_dir)
        try:
            os.makedirs(os.path.join(self.data_dir, META_DIRECTORY), exist_ok=True)
            self._directory_lock = _DirectoryLock(
                self.data_dir, owner or " ".join(sys.argv) or "headwater"
            )
        except OSError as error:
            raise storage_error(error, f"open data directory {self.data_dir}") from error
        self._lock = threading.RLock()
        self._topics: dict[str, _Topic] = {}
        self._closed = False
        self._background: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_checkpoint_ms = now_ms()
        self.recovery: dict[str, RecoveryReport] = {}
        try:
            self._load()
        except OSError as error:
            self._release_after_failed_load()
            raise storage_error(error, f"load data directory {self.data_dir}") from error
        except BaseException:
            self._release_after_failed_load()
            raise

    def _release_after_failed_load(self) -> None:
        for log in self.all_partitions():
            with contextlib.suppress(Exception):
                log.close()
        self._directory_lock.release()

    # --- loading ----------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        return os.path.join(self.data_dir, *parts)

    def _load(self) -> None:
        marker = self._path(CLEAN_SHUTDOWN_FILE)
        clean = os.path.exists(marker)
        recovery_points = _read_checkpoint(self._path(RECOVERY_POINT_FILE))
        log_starts = _read_checkpoint(self._path(LOG_START_FILE))
        records: dict[str, _TopicRecord] = {}
        meta = self._path(META_DIRECTORY)
        for name in sorted(os.listdir(meta)):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(meta, name))
                continue
            if not name.endswith(".json"):
                continue
            with open(os.path.join(meta, name), "rb") as file:
                record = msgspec.json.decode(file.read(), type=_TopicRecord)
            records[record.name] = record
        for entry in sorted(os.listdir(self.data_dir)):
            path = self._path(entry)
            if not os.path.isdir(path) or entry == "__headwater_meta":
                continue
            topic, _, suffix = entry.rpartition("-")
            known = (
                topic in records and suffix.isdigit() and int(suffix) < records[topic].partitions
            )
            if (
                entry.endswith(DELETED_SUFFIX) or (suffix.isdigit() and not known)
            ) and _only_segments(path):
                # The remains of a deleted topic: its metadata went first, so it is gone for good.
                # Only a directory holding nothing but segment files is ours to remove.
                shutil.rmtree(path, ignore_errors=True)
        for record in records.values():
            config = TopicConfig.from_overrides(record.configs)
            info = TopicInfo(record.name, uuid.UUID(record.topic_id), record.partitions, config)
            topic_state = _Topic(info)
            for partition in range(record.partitions):
                key = (record.name, partition)
                log, report = load_partition_log(
                    self._path(f"{record.name}-{partition}"),
                    record.name,
                    partition,
                    config,
                    recovery_point=recovery_points.get(key, 0),
                    log_start_offset=log_starts.get(key, 0),
                    clean_shutdown=clean,
                )
                self.recovery[log.name] = report
                log.on_log_start_advanced = self.checkpoint
                topic_state.partitions.append(log)
            self._topics[record.name] = topic_state
        if clean:
            # From here on the directory is dirty until the next clean close.
            os.unlink(marker)
            sync_directory(self.data_dir)
        self._write_checkpoints()

    # --- topics -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log manager for {self.data_dir} is closed")

    def create_topic(
        self, name: str, partitions: int = 1, configs: Mapping[str, str] | None = None
    ) -> TopicInfo:
        validate_topic_name(name)
        if not 1 <= partitions <= limits.PARTITIONS_PER_TOPIC_MAX:
            raise InvalidPartitionsError(
                f"partition count {partitions} is not between 1 and {limits.PARTITIONS_PER_TOPIC_MAX}"
            )
        config = TopicConfig.from_overrides(configs)
        with self._lock:
            self._check_open()
            if name in self._topics:
                raise TopicAlreadyExistsError(f"topic {name!r} already exists")
            colliding = name.replace(".", "_")
            for existing in self._topics:
                if existing.replace(".", "_") == colliding:
                    raise InvalidTopicError(
                        f"topic {name!r} collides with {existing!r} ('.' and '_' clash)"
                    )
            info = TopicInfo(name, uuid.uuid4(), partitions, config)
            self._write_topic(info)
            topic = _Topic(info)
            for partition in range(partitions):
                topic.partitions.append(self._open_new_partition(info, partition))
            self._topics[name] = topic
            return info

    def _open_new_partition(self, info: TopicInfo, partition: int) -> PartitionLog:
        path = self._path(f"{info.name}-{partition}")
        if os.path.exists(path):
            shutil.rmtree(path)
        log, _ = load_partition_log(
            path,
            info.name,
            partition,
            info.config,
            recovery_point=0,
            log_start_offset=0,
            clean_shutdown=True,
        )
        sync_directory(self.data_dir)
        log.on_log_start_advanced = self.checkpoint
        return log

    def _write_topic(self, info: TopicInfo) -> None:
        record = _TopicRecord(
            info.name, str(info.topic_id), info.partition_count, dict(info.config.overrides)
        )
        write_atomically(
            self._path(META_DIRECTORY, f"{info.name}.json"), msgspec.json.encode(record)
        )

    def delete_topic(self, name: str) -> None:
        with self._lock:
            self._check_open()
            topic = self._get(name)
            # The metadata goes first: once it is gone, recovery deletes any leftover partitions.
            os.unlink(self._path(META_DIRECTORY, f"{name}.json"))
            sync_directory(self._path(META_DIRECTORY))
            del self._topics[name]
            suffix = f".{uuid.uuid4().hex}{DELETED_SUFFIX}"
            for log in topic.partitions:
                log.close()
                doomed = log.directory + suffix
                os.rename(log.directory, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            sync_directory(self.data_dir)

    def _get(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        return topic

    def topic(self, name: str) -> TopicInfo:
        # Without `_lock`: producers ask once a record. Writers change a topic by replacing
        # whole values (a dict entry, or the frozen info once its logs exist), and a dict or
        # attribute read is atomic, so this sees a topic before or after a change, not between.
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        return topic.info

    def has_topic(self, name: str) -> bool:
        with self._lock:
            return name in self._topics

    def topics(self) -> list[TopicInfo]:
        with self._lock:
            return [self._topics[name].info for name in sorted(self._topics)]

    def partition(self, topic: str, partition: int) -> PartitionLog:
        with self._lock:
            self._check_open()
            logs = self._get(topic).partitions
            if not 0 <= partition < len(logs):
                raise UnknownTopicOrPartitionError(f"topic {topic!r} has no partition {partition}")
            return logs[partition]

    def partitions(self, topic: str) -> list[PartitionLog]:
        with self._lock:
            return list(self._get(topic).partitions)

    def alter_topic_config(self, name: str, changes: Mapping[str, str | None]) -> TopicInfo:
        """Apply config changes (None restores a default); validated before anything changes."""
        with self._lock:
            self._check_open()
            topic = self._get(name)
            config = topic.info.config.altered(changes)
            info = TopicInfo(name, topic.info.topic_id, topic.info.partition_count, config)
            self._write_topic(info)
            topic.info = info
            for log in topic.partitions:
                log.set_config(config)
            return info

    def create_partitions(self, name: str, total: int) -> TopicInfo:
        """Grow a topic to `total` partitions (Kafka never shrinks one)."""
        with self._lock:
            self._check_open()
            topic = self._get(name)
            current = topic.info.partition_count
            if total <= current or total > limits.PARTITIONS_PER_TOPIC_MAX:
                raise InvalidPartitionsError(
                    f"topic {name!r} has {current} partitions; cannot go to {total}"
                )
            info = TopicInfo(name, topic.info.topic_id, total, topic.info.config)
            # Partition directories first: a crash before the metadata leaves strays, removed at load.
            new_logs = [
                self._open_new_partition(info, partition) for partition in range(current, total)
            ]
            self._write_topic(info)
            topic.partitions.extend(new_logs)
            topic.info = info  # last: a reader without the lock (`topic`) sees the logs first
            return info

    def all_partitions(self) -> Iterator[PartitionLog]:
        with self._lock:
            logs = [log for topic in self._topics.values() for log in topic.partitions]
        yield from logs

    # --- maintenance ------------------------------------------------------------------------

    def _write_checkpoints(self) -> None:
        recovery_points = {}
        log_starts = {}
        for log in self.all_partitions():
            recovery_points[(log.topic, log.partition)] = log.recovery_point
            log_starts[(log.topic, log.partition)] = log.log_start_offset
        write_atomically(self._path(RECOVERY_POINT_FILE), _format_checkpoint(recovery_points))
        write_atomically(self._path(LOG_START_FILE), _format_checkpoint(log_starts))
        self._last_checkpoint_ms = now_ms()

    def checkpoint(self) -> None:
        with self._lock:
            self._check_open()
            self._write_checkpoints()

    def maintenance(self, now: int | None = None, *, retention: bool = True) -> None:
        """One round of housekeeping: time-based flush, retention (if `retention`), compaction,
        checkpoints."""
        from headwater.log.cleaner import clean_partition

        now = now_ms() if now is None else now
        for log in self.all_partitions():
            try:
                log.flush_if_due(now)
                if retention:
                    log.apply_retention(now)
                if log.config.compact:
                    clean_partition(log, now)
                log.close_retired(now)
            except LogClosedError:
                continue  # deleted or offline meanwhile
            except StorageError as error:
                _log.error("maintenance of %s failed: %s", log.name, error)
        if now - self._last_checkpoint_ms >= limits.RECOVERY_POINT_CHECKPOINT_INTERVAL_MS:
            with self._lock:
                if not self._closed:
                    self._write_checkpoints()

    def start_background(
        self,
        interval_ms: int = limits.MAINTENANCE_INTERVAL_MS,
        retention_check_interval_ms: int = limits.RETENTION_CHECK_INTERVAL_MS,
    ) -> None:
        """Run `maintenance` on a daemon thread until `close`: every `interval_ms`, with
        retention every `retention_check_interval_ms` (the first after at most 30 s)."""
        invariant(self._background is None, "background maintenance started once")
        if interval_ms < 1 or retention_check_interval_ms < 1:
            raise ConfigError("maintenance intervals must be positive")
        retention_every_s = retention_check_interval_ms / 1000

        def loop() -> None:
            first_delay_ms = min(limits.RETENTION_FIRST_CHECK_DELAY_MS, retention_check_interval_ms)
            retention_due = time.monotonic() + first_delay_ms / 1000
            while not self._stop.wait(interval_ms / 1000):
                now = time.monotonic()
                retention = now >= retention_due
                if retention:
                    retention_due = now + retention_every_s
                try:
                    self.maintenance(retention=retention)
                except Exception:  # keep maintaining the other partitions next round
                    _log.exception("background maintenance failed")

        self._background = threading.Thread(
            target=loop, name="headwater-log-maintenance", daemon=True
        )
        self._background.start()

    def close(self) -> None:
        """Flush every partition, write checkpoints and the clean-shutdown marker, unlock.

        The directory is unlocked whatever fails; the marker is written only if all went well,
        so a failed close is recovered like a crash.
        """
        self._stop.set()
        if self._background is not None and self._background is not threading.current_thread():
            self._background.join()  # outside `_lock`: maintenance takes it
        with self._lock:
            if self._closed:
                return
            self._closed = True
            failed = False
            try:
                for log in self.all_partitions():
                    try:
                        log.close()
                    except StorageError as error:
                        failed = True
                        _log.error("closing %s failed: %s", log.name, error)
                self._write_checkpoints()
                if not failed:
                    write_atomically(self._path(CLEAN_SHUTDOWN_FILE), b"")
            finally:
                self._directory_lock.release()

    def __enter__(self) -> LogManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_log_manager(data_dir: str, *, owner: str | None = None) -> LogManager:
    """Open a data directory, mapping an unusable path to `ConfigError`."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError(f"data directory {data_dir} is not a directory")
    return LogManager(data_dir, owner=owner)


__all__ = ["LogManager", "TopicInfo", "open_log_manager", "validate_topic_name"]

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from log_records import records

from headwater.errors import (
    ConfigError,
    DataDirectoryLockedError,
    InvalidPartitionsError,
    InvalidTopicError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from headwater.log.manager import CLEAN_SHUTDOWN_FILE, LogManager
from headwater.log.partition_log import PartitionLog


def test_topics_are_created_listed_and_persisted(data_dir: Path) -> None:
    with LogManager(str(data_dir)) as manager:
        created = manager.create_topic("orders", 3, {"retention.ms": "1000"})
        manager.create_topic("audit.log", 1)
        assert [topic.name for topic in manager.topics()] == ["audit.log", "orders"]
        assert created.partition_count == 3
        assert sorted(os.listdir(data_dir / "orders-2")) == [
            "00000000000000000000.index",
            "00000000000000000000.log",
            "00000000000000000000.timeindex",
        ]
        manager.partition("orders", 2).append_records(records(4))
    assert (data_dir / CLEAN_SHUTDOWN_FILE).exists()
    with LogManager(str(data_dir)) as manager:
        assert not (data_dir / CLEAN_SHUTDOWN_FILE).exists()  # dirty while open
        info = manager.topic("orders")
        assert info.topic_id == created.topic_id
        assert info.config.retention_ms == 1000
        assert manager.partition("orders", 2).log_end_offset == 4
        checkpoint = (data_dir / "recovery-point-offset-checkpoint").read_text().splitlines()
        assert checkpoint[:2] == ["0", "4"] and "orders 2 4" in checkpoint


@pytest.mark.parametrize("name", ["", ".", "..", "a b", "x" * 250, "slash/name", "ünicode"])
def test_invalid_topic_names(manager: LogManager, name: str) -> None:
    with pytest.raises(InvalidTopicError):
        manager.create_topic(name)


def test_topic_errors(manager: LogManager) -> None:
    manager.create_topic("a.b")
    with pytest.raises(TopicAlreadyExistsError):
        manager.create_topic("a.b")
    with pytest.raises(InvalidTopicError, match="collides"):
        manager.create_topic("a_b")
    with pytest.raises(InvalidPartitionsError):
        manager.create_topic("zero", 0)
    with pytest.raises(ConfigError, match="bogus"):
        manager.create_topic("bad", 1, {"bogus": "1"})
    assert not manager.has_topic("bad")
    with pytest.raises(UnknownTopicOrPartitionError):
        manager.partition("missing", 0)
    with pytest.raises(UnknownTopicOrPartitionError):
        manager.partition("a.b", 1)


def test_delete_topic_removes_data_and_allows_recreation(data_dir: Path) -> None:
    with LogManager(str(data_dir)) as manager:
        manager.create_topic("t", 2)
        manager.partition("t", 0).append_records(records(3))
        manager.delete_topic("t")
        assert not manager.has_topic("t")
        assert not (data_dir / "t-0").exists()
        with pytest.raises(UnknownTopicOrPartitionError):
            manager.delete_topic("t")
        manager.create_topic("t", 1)
        assert manager.partition("t", 0).log_end_offset == 0
    with LogManager(str(data_dir)) as manager:
        assert [topic.partition_count for topic in manager.topics()] == [1]


def test_stray_partition_directories_are_removed_at_open(data_dir: Path) -> None:
    with LogManager(str(data_dir)) as manager:
        manager.create_topic("t", 1)
    (data_dir / "gone-0").mkdir()
    (data_dir / "t-0.abc-delete").mkdir()
    (data_dir / "t-5").mkdir()
    with LogManager(str(data_dir)) as manager:
        assert [topic.name for topic in manager.topics()] == ["t"]
    assert sorted(entry for entry in os.listdir(data_dir) if not entry.startswith((".", "__"))) == [
        "log-start-offset-checkpoint",
        "recovery-point-offset-checkpoint",
        "t-0",
    ]


def test_alter_config_and_add_partitions_persist(data_dir: Path) -> None:
    with LogManager(str(data_dir)) as manager:
        manager.create_topic("t", 1)
        manager.alter_topic_config("t", {"retention.bytes": "100", "segment.bytes": "4096"})
        with pytest.raises(ConfigError):
            manager.alter_topic_config("t", {"segment.bytes": "1"})
        assert manager.partition("t", 0).config.segment_bytes == 4096
        manager.create_partitions("t", 3)
        with pytest.raises(InvalidPartitionsError):
            manager.create_partitions("t", 2)
        manager.partition("t", 2).append_records(records(1))
    with LogManager(str(data_dir)) as manager:
        info = manager.topic("t")
        assert info.partition_count == 3
        assert dict(info.config.overrides) == {"retention.bytes": "100", "segment.bytes": "4096"}
        assert manager.partition("t", 2).log_end_offset == 1


def test_second_process_is_refused_with_the_holder_named(data_dir: Path) -> None:
    with LogManager(str(data_dir), owner="test holder"):
        with pytest.raises(DataDirectoryLockedError, match=f"pid {os.getpid()}"):
            LogManager(str(data_dir))
        code = (
            "import sys\n"
            "from headwater.log.manager import LogManager\n"
            "from headwater.errors import DataDirectoryLockedError\n"
            "try:\n"
            f"    LogManager({str(data_dir)!r})\n"
            "except DataDirectoryLockedError as error:\n"
            "    print(error)\n"
            "    sys.exit(3)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 3, result.stderr
        assert "test holder" in result.stdout and str(os.getpid()) in result.stdout
    # Released on close: a new owner gets in.
    LogManager(str(data_dir)).close()


def _expired_segments(manager: LogManager) -> PartitionLog:
    """A partition of 30 records in several segments, all past retention.ms (1 ms)."""
    manager.create_topic(
        "t", 1, {"segment.bytes": "1024", "retention.ms": "1", "file.delete.delay.ms": "0"}
    )
    log = manager.partition("t", 0)
    for start in range(0, 30, 3):
        log.append_records(records(3, start=start, size=100))
    return log


def test_background_retention_waits_for_its_check_interval(data_dir: Path) -> None:
    """Maintenance every 10 ms, retention every minute (at most 30 s after start): expired
    segments stay until then, as Kafka's log.retention.check.interval.ms keeps them."""
    manager = LogManager(str(data_dir))
    try:
        log = _expired_segments(manager)
        manager.start_background(interval_ms=10, retention_check_interval_ms=60_000)
        time.sleep(0.5)
        assert log.log_start_offset == 0
    finally:
        manager.close()


def test_background_maintenance_applies_retention(data_dir: Path) -> None:
    manager = LogManager(str(data_dir))
    try:
        log = _expired_segments(manager)
        manager.start_background(interval_ms=10, retention_check_interval_ms=10)
        deadline = 200
        while log.log_start_offset < 30 and deadline:
            time.sleep(0.02)
            deadline -= 1
        assert log.log_start_offset == 30
    finally:
        manager.close()

"""A full file system: a small tmpfs is mounted for each test and filled until ENOSPC.

Needs root (CI runs as root); without it, or if mounting fails, the tests fail rather than
skip. On tmpfs fsync is a no-op but writes fail with ENOSPC, so these tests exercise the
write paths: an append that does not fit, a segment roll, and the checkpoint and lock files
written at open and close.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from headwater.errors import DiskFullError, LogClosedError, StorageError
from headwater.log.config import FLUSH_NEVER
from headwater.log.manager import LogManager
from headwater.log.partition_log import PartitionLog
from headwater.log.record_batch import NewRecord, iter_batches

FS_BYTES = 4 * 1024 * 1024
PAGE = 4096
TOPIC = "t"


def _load_writer() -> ModuleType:
    path = Path(__file__).with_name("crash_writer.py")
    spec = importlib.util.spec_from_file_location("headwater_crash_writer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


expected_record = _load_writer().expected_record


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 4 MiB tmpfs, unmounted (lazily) afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the disk-full tests mount a tmpfs and must run as root (CI does)")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {mount_point}: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path, limit: int | None = None) -> int:
    """Write `path` until ENOSPC (or `limit` bytes); return its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        written = os.fstat(fd).st_size
        for chunk in (64 * 1024, PAGE, 1):
            while limit is None or written + chunk <= limit:
                try:
                    written += os.write(fd, b"\xee" * chunk)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
        return written
    finally:
        os.close(fd)


def batch_records(base: int, count: int) -> list[NewRecord]:
    return [NewRecord(*expected_record(0, base + number)) for number in range(count)]


def assert_records(log: PartitionLog, end: int, context: str) -> None:
    """Records 0..end-1 are exactly the expected ones, and nothing else is there."""
    assert log.log_end_offset == end, f"{context}: log end {log.log_end_offset}, expected {end}"
    offset = 0
    while offset < end:
        result = log.read_records(offset, 256 * 1024)
        assert result.records, f"{context}: nothing readable at {offset}"
        for record in result.records:
            assert record.offset == offset, f"{context}: offset {record.offset}, expected {offset}"
            assert (record.key, record.value, record.timestamp) == expected_record(0, offset), (
                f"{context}: wrong content at offset {offset}"
            )
            offset += 1
    assert log.read_records(end).records == []
    problems = log.verify()
    assert problems == [], f"{context}: verify() found {problems}"


def assert_whole_batches(partition_dir: Path) -> None:
    """Every .log file is a sequence of whole batches: no torn batch was left behind."""
    for log_path in sorted(partition_dir.glob("*.log")):
        data = log_path.read_bytes()
        ends = [position + header.size_bytes for position, header in iter_batches(data)]
        assert (ends[-1] if ends else 0) == len(data), f"{log_path.name}: a torn batch at the end"


def open_manager(data_dir: Path) -> LogManager:
    return LogManager(str(data_dir))


@pytest.mark.parametrize("flush_messages", [1, FLUSH_NEVER], ids=["fsync-every-append", "os-flush"])
def test_append_until_full_then_recover(small_fs: Path, flush_messages: int) -> None:
    filler = small_fs / "filler"
    fill(filler, limit=1024 * 1024)
    data_dir = small_fs / "data"
    manager = open_manager(data_dir)
    manager.create_topic(
        TOPIC, 1, {"flush.messages": str(flush_messages), "index.interval.bytes": "1024"}
    )
    log = manager.partition(TOPIC, 0)
    failure: DiskFullError | None = None
    for number in range(20_000):
        end = log.log_end_offset
        records = batch_records(end, 1 + number % 4)
        try:
            result = log.append_records(records)
        except DiskFullError as error:
            failure = error
            break
        assert result.base_offset == end
    assert failure is not None, "4 MiB never filled up"
    assert isinstance(failure, StorageError)
    assert "full" in str(failure).lower(), f"unclear error: {failure}"

    # The failed append changed nothing: same end, everything acknowledged still readable.
    assert log.log_end_offset == end, "the failed append moved the log end"
    assert log.high_watermark == end
    assert end > 1000, f"only {end} records fit: the file system filled too early"
    assert_records(log, end, "after ENOSPC")
    assert_whole_batches(data_dir / f"{TOPIC}-0")
    for _ in range(3):  # a producer retrying keeps getting the same clear error
        with pytest.raises(DiskFullError):
            log.append_records(records)
        assert log.log_end_offset == end

    # Room again: appends continue at the next offset.
    filler.unlink()
    result = log.append_records(records)
    assert (result.base_offset, result.last_offset) == (end, end + len(records) - 1)
    log.flush()
    end += len(records)
    assert_records(log, end, "after freeing space")
    manager.close()
    assert_whole_batches(data_dir / f"{TOPIC}-0")
    with open_manager(data_dir) as again:
        assert_records(again.partition(TOPIC, 0), end, "reopened")


def test_full_at_segment_roll_then_recover(small_fs: Path) -> None:
    """The file system fills exactly when the active segment must roll (its indexes are written
    when it is sealed): the append fails cleanly and, once space is freed, appends resume."""
    data_dir = small_fs / "data"
    manager = open_manager(data_dir)
    manager.create_topic(TOPIC, 1, {"segment.bytes": "16384", "index.interval.bytes": "512"})
    log = manager.partition(TOPIC, 0)
    big = [NewRecord(None, b"v" * 6000, 1)]
    for _ in range(2):
        log.append_records(big)
    end = log.log_end_offset
    filler = small_fs / "filler"
    fill(filler)
    with pytest.raises(DiskFullError) as caught:
        log.append_records(big)  # 2 x 6 KB + 6 KB > 16 KiB: rolls
    assert "full" in str(caught.value).lower()
    assert log.log_end_offset == end
    assert [record.value for record in log.read_records(0).records] == [b"v" * 6000] * 2
    try:
        with pytest.raises(DiskFullError):
            log.append_records(big)
        filler.unlink()
        result = log.append_records(big)
    except LogClosedError as error:
        pytest.fail(f"a full disk at a segment roll took the partition offline for good: {error}")
    assert result.base_offset == end
    offsets = []
    while len(offsets) < 4 and (records := log.read_records(len(offsets)).records):
        offsets += [record.offset for record in records]  # one segment per read
    assert offsets == [0, 1, 2]
    assert log.verify() == []
    manager.close()


def _prepare(small_fs: Path, shutdown: str) -> tuple[Path, int]:
    """A data directory on the tmpfs holding acknowledged records, closed cleanly or crashed."""
    source = small_fs / "source"
    manager = open_manager(source)
    manager.create_topic(TOPIC, 1, {"segment.bytes": "16384", "index.interval.bytes": "512"})
    log = manager.partition(TOPIC, 0)
    while log.log_end_offset < 200:
        log.append_records(batch_records(log.log_end_offset, 3))
    end = log.log_end_offset
    data_dir = small_fs / "data"
    if shutdown == "crashed":
        shutil.copytree(source, data_dir)  # what the disk holds if the process dies now
        manager.close()
        shutil.rmtree(source)
    else:
        manager.close()
        source.rename(data_dir)
    return data_dir, end


def _full(small_fs: Path, free_pages: int) -> Path:
    filler = small_fs / "filler"
    size = fill(filler)
    os.truncate(filler, max(0, size - free_pages * PAGE))
    return filler


def _open_or_storage_error(data_dir: Path) -> LogManager | None:
    try:
        return open_manager(data_dir)
    except StorageError:
        return None
    except Exception as error:
        pytest.fail(
            f"opening on a full file system raised {type(error).__name__}, "
            f"not StorageError: {error}"
        )


@pytest.mark.parametrize("free_pages", [0, 1])
@pytest.mark.parametrize("shutdown", ["clean", "crashed"])
def test_open_on_full_file_system(small_fs: Path, shutdown: str, free_pages: int) -> None:
    """Opening a directory on a full file system (lock, recovery and checkpoint writes fail)
    either works or raises StorageError, and loses nothing that was durable."""
    data_dir, end = _prepare(small_fs, shutdown)
    filler = _full(small_fs, free_pages)
    manager = _open_or_storage_error(data_dir)
    if manager is not None:
        assert_records(manager.partition(TOPIC, 0), end, "opened while full")
        try:
            manager.close()
        except StorageError:
            pass
        except Exception as error:
            pytest.fail(f"closing on a full file system raised {type(error).__name__}: {error}")
    filler.unlink()
    with open_manager(data_dir) as manager:
        log = manager.partition(TOPIC, 0)
        assert_records(log, end, "reopened with space")
        assert log.append_records(batch_records(end, 2)).base_offset == end


@pytest.mark.parametrize("flush_messages", [1, FLUSH_NEVER], ids=["fsync-every-append", "os-flush"])
def test_close_on_full_file_system(small_fs: Path, flush_messages: int) -> None:
    """Closing when the final seal and checkpoint writes fail raises StorageError (or nothing),
    releases the directory, and loses no acknowledged record."""
    data_dir = small_fs / "data"
    manager = open_manager(data_dir)
    manager.create_topic(
        TOPIC,
        1,
        {
            "segment.bytes": "65536",
            "index.interval.bytes": "256",
            "flush.messages": str(flush_messages),
        },
    )
    log = manager.partition(TOPIC, 0)
    while log.log_end_offset < 150:
        log.append_records(batch_records(log.log_end_offset, 3))
    log.flush()
    end = log.log_end_offset
    filler = _full(small_fs, 0)
    try:
        manager.close()
    except StorageError as error:
        assert "full" in str(error).lower(), error
    except Exception as error:
        pytest.fail(f"closing on a full file system raised {type(error).__name__}: {error}")
    filler.unlink()
    with open_manager(data_dir) as again:  # the directory lock was released
        log = again.partition(TOPIC, 0)
        assert_records(log, end, "reopened after a failed close")
        assert log.append_records(batch_records(end, 1)).base_offset == end
    assert_whole_batches(data_dir / f"{TOPIC}-0")

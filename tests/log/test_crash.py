"""Durability under crashes: SIGKILLed writer processes, torn tails, garbage and bit flips.

The SIGKILL rounds run `crash_writer.py` as a real process, kill it at random moments (while
appending, and while it recovers the previous crash), and check after every round that the log
holds exactly a prefix of the writer's deterministic sequence containing every acknowledged
record. A SIGKILL does not undo writes the kernel already has, so the other tests damage the
files of a crash image directly, as a power loss or a failing disk would. One test makes an
fsync fail (EIO) in-process, as no file system at hand can be made to fail one for real.

Set HEADWATER_CRASH_SEED to replay a seed (each failure message names it); HEADWATER_LONG=1
runs the soak variant (>= 200 kills).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import itertools
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from headwater.errors import CorruptRecordError, StorageError
from headwater.log.config import FLUSH_NEVER
from headwater.log.manager import CLEAN_SHUTDOWN_FILE, LogManager
from headwater.log.partition_log import PartitionLog
from headwater.log.record_batch import BATCH_HEADER_SIZE, NewRecord, Record, iter_batches

WRITER_PATH = Path(__file__).with_name("crash_writer.py")


def _load_writer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("headwater_crash_writer", WRITER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


writer = _load_writer()
expected_record = writer.expected_record
BASE_TIMESTAMP_MS: int = writer.BASE_TIMESTAMP_MS
PARTITIONS: int = writer.PARTITIONS

LONG = os.environ.get("HEADWATER_LONG") == "1"

# Topic name -> flush.messages. One topic per policy, all in the same data directory.
POLICIES = {
    "every-append": 1,  # fsync before append returns; ack after every append
    "flush-due": 20,  # the writer flushes when `flush_due` says so, or every few batches
    "os-flush": FLUSH_NEVER,  # left to the OS; the writer flushes every few batches
}


# --- reading and checking ----------------------------------------------------------------


def read_all(log: PartitionLog, start: int = 0, max_bytes: int = 256 * 1024) -> Iterator[Record]:
    """Every record from `start` up to the high watermark, in chunks."""
    offset = start
    while offset < log.high_watermark:
        result = log.read_records(offset, max_bytes)
        assert result.next_offset > offset, f"{log.name}: read at {offset} made no progress"
        yield from result.records
        offset = result.next_offset


def describe(record: Record) -> str:
    value = record.value or b""
    return f"offset {record.offset} key={record.key!r} value={value[:20]!r}... ({len(value)} bytes)"


def check_record(record: Record, partition: int, offset: int, context: str) -> None:
    assert record.offset == offset, f"{context}: expected offset {offset}, got {describe(record)}"
    key, value, timestamp = expected_record(partition, offset)
    assert (record.key, record.value, record.timestamp) == (key, value, timestamp), (
        f"{context}: wrong content at {describe(record)}"
    )


def assert_exact_prefix(
    log: PartitionLog, partition: int, end: int, *, start: int = 0, context: str = ""
) -> None:
    """The log holds exactly records 0..end-1 of the deterministic sequence, all readable."""
    context = f"{context} {log.name}".strip()
    assert log.log_start_offset == 0, f"{context}: log start offset {log.log_start_offset}"
    assert log.log_end_offset == end, f"{context}: log end {log.log_end_offset}, expected {end}"
    assert log.high_watermark == end, f"{context}: high watermark {log.high_watermark} != {end}"
    offset = start
    for record in read_all(log, start):
        check_record(record, partition, offset, context)
        offset += 1
    assert offset == end, f"{context}: records stop at {offset}, log end is {end}"
    beyond = log.read_records(end, 1 << 20)
    assert beyond.records == [], f"{context}: records past the log end: {beyond.records[:1]}"


def assert_timestamp_lookup(log: PartitionLog, offsets: list[int], context: str = "") -> None:
    for offset in offsets:
        found = log.offset_for_timestamp(BASE_TIMESTAMP_MS + offset)
        assert found == (offset, BASE_TIMESTAMP_MS + offset), (
            f"{context} {log.name}: offset_for_timestamp({BASE_TIMESTAMP_MS + offset}) = {found}, "
            f"expected offset {offset}"
        )


def segment_batches(path: Path) -> list[tuple[int, int, int, int]]:
    """(position, size, base offset, last offset) of every whole batch of a .log file."""
    data = path.read_bytes()
    return [
        (position, header.size_bytes, header.base_offset, header.last_offset)
        for position, header in iter_batches(data)
    ]


def log_files(partition_dir: Path) -> list[Path]:
    return sorted(partition_dir.glob("*.log"))


def assert_index_files(partition_dir: Path, interval: int) -> None:
    """Every index entry points at the right batch, and both indexes are populated (rebuilt).

    Call on a cleanly closed directory. Offset-index entries must fall on batch boundaries with
    the matching base offset, and no stretch of more than `interval` bytes plus one batch may
    go unindexed (the sparse index exists). Time-index entries must be increasing and, since
    the test data's timestamps grow with the offset, equal the timestamp of their offset.
    """
    for log_path in log_files(partition_dir):
        base = int(log_path.name[:20])
        batches = segment_batches(log_path)
        size = log_path.stat().st_size
        assert sum(batch[1] for batch in batches) == size, f"{log_path.name}: not whole batches"
        starts = {position: base_offset for position, _, base_offset, _ in batches}
        index_path = log_path.with_suffix(".index")
        data = index_path.read_bytes() if index_path.exists() else b""
        assert len(data) % 8 == 0, f"{index_path.name}: partial entry"
        positions = [0]
        for relative, position in struct.iter_unpack(">ii", data):
            assert starts.get(position) == base + relative, (
                f"{index_path.name}: entry ({relative}, {position}) is not a batch boundary "
                f"of offset {base + relative}"
            )
            assert position > positions[-1] or position == 0 == positions[-1], (
                f"{index_path.name}: entries not increasing"
            )
            positions.append(position)
        positions.append(size)
        largest = max((batch[1] for batch in batches), default=0)
        widest = max(after - before for before, after in itertools.pairwise(positions))
        assert widest <= interval + largest, (
            f"{index_path.name}: {len(data) // 8} entries leave {widest} bytes of the "
            f"{size}-byte segment unindexed (index.interval.bytes={interval}): not rebuilt?"
        )
        time_path = log_path.with_suffix(".timeindex")
        time_data = time_path.read_bytes() if time_path.exists() else b""
        assert len(time_data) % 12 == 0, f"{time_path.name}: partial entry"
        time_entries = list(struct.iter_unpack(">qi", time_data))
        if len(data) >= 8:
            assert time_entries, (
                f"{time_path.name}: empty while the offset index is not: not rebuilt?"
            )
        previous = -1
        for timestamp, relative in time_entries:
            assert timestamp > previous, f"{time_path.name}: timestamps not increasing"
            assert timestamp == BASE_TIMESTAMP_MS + base + relative, (
                f"{time_path.name}: entry ({timestamp}, {relative}) names the wrong offset"
            )
            previous = timestamp


# --- SIGKILL rounds ---------------------------------------------------------------------


@dataclass
class CrashHarness:
    """Runs writer processes against one data directory, kills them, and checks the log."""

    data_dir: Path
    work_dir: Path
    seed: int
    rng: random.Random = field(init=False)
    kills: int = 0
    early_kills: int = 0
    early_kills_during_open: int = 0
    acks: int = 0
    checks: int = 0
    truncated_bytes: int = 0
    # Offsets known to be present: acknowledged, seen by a writer at its start, or checked.
    floor: dict[tuple[str, int], int] = field(default_factory=dict)
    # Offsets whose content a check already compared.
    checked: dict[tuple[str, int], int] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    # Topics a writer ran on since the last check.
    written: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def context(self) -> str:
        return f"[seed {self.seed}, kill {self.kills}]"

    def run_writer(self, topic: str, *, early: bool) -> None:
        """Start a writer and SIGKILL it: `early` 0-20 ms after it starts opening the data
        directory (during recovery or topic creation), otherwise 0.05-1.0 s into appending."""
        stderr_path = self.work_dir / "writer.stderr"
        seed = self.rng.randrange(2**31)
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(WRITER_PATH),
                    str(self.data_dir),
                    topic,
                    str(POLICIES[topic]),
                    str(seed),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        lines: list[str] = []
        opening = threading.Event()
        opened = threading.Event()

        def reader() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                if not raw.endswith(b"\n"):
                    break  # cut off by the kill: not a complete line, so not an acknowledgement
                line = raw.decode().strip()
                lines.append(line)
                if line == "opening":
                    opening.set()
                elif line == "opened":
                    opened.set()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            awaited = opening if early else opened
            deadline = time.monotonic() + 60
            while not awaited.wait(0.01):
                if process.poll() is not None or time.monotonic() > deadline:
                    break
            alive = process.poll() is None and awaited.is_set()
            if alive:
                time.sleep(self.rng.uniform(0, 0.02) if early else self.rng.uniform(0.05, 1.0))
                alive = process.poll() is None
        finally:
            process.kill()  # SIGKILL
            process.wait()
            thread.join(10)
            assert process.stdout is not None
            process.stdout.close()
        assert alive, (
            f"{self.context()} writer {topic} (seed {seed}) exited with {process.returncode} "
            f"before the kill; output {lines[-5:]}; stderr:\n{stderr_path.read_text()}"
        )
        assert process.returncode == -signal.SIGKILL, process.returncode
        self.kills += 1
        self.written.add(topic)
        was_open = opened.is_set()
        if early:
            self.early_kills += 1
            self.early_kills_during_open += not was_open
        if was_open:
            self.created.add(topic)
        for line in lines:
            kind, *rest = line.split()
            if kind == "start":
                partition, end = int(rest[0]), int(rest[1])
                known = self.floor.get((topic, partition), 0)
                assert end >= known, (
                    f"{self.context()} writer recovered {topic}-{partition} to end {end}, "
                    f"but offsets below {known} were acknowledged or present before"
                )
                self.floor[(topic, partition)] = end
            elif kind == "ack":
                partition, offset = int(rest[0]), int(rest[1])
                self.acks += 1
                key = (topic, partition)
                self.floor[key] = max(self.floor.get(key, 0), offset + 1)

    def check(self, *, full: bool) -> None:
        """Open the crashed directory, check every partition, and close it cleanly.

        Every record a writer added since the last check is compared, and every partition a
        writer ran on is scrubbed with `verify()`; older records, checked before and since
        trusted by recovery, are compared and scrubbed again when `full`.
        """
        context = self.context()
        manager = LogManager(str(self.data_dir))
        try:
            self.checks += 1
            self.truncated_bytes += sum(
                report.truncated_bytes for report in manager.recovery.values()
            )
            for topic in POLICIES:
                if not manager.has_topic(topic):
                    assert topic not in self.created, f"{context} topic {topic} vanished"
                    continue
                for partition in range(PARTITIONS):
                    log = manager.partition(topic, partition)
                    key = (topic, partition)
                    end = log.log_end_offset
                    floor = self.floor.get(key, 0)
                    assert end >= floor, (
                        f"{context} {log.name} ends at {end}: acknowledged or previously present "
                        f"records below {floor} were lost"
                    )
                    start = 0 if full else min(self.checked.get(key, 0), end)
                    assert_exact_prefix(log, partition, end, start=start, context=context)
                    if end > start:
                        sample = self.rng.sample(range(start, end), min(3, end - start))
                        assert_timestamp_lookup(log, [start, end - 1, *sample], context)
                    if full or topic in self.written:
                        problems = log.verify()
                        assert problems == [], f"{context} verify() of {log.name}: {problems}"
                    self.checked[key] = self.floor[key] = end
            self.written.clear()
        finally:
            manager.close()


def run_crash_rounds(harness: CrashHarness, rounds: int, *, full_check_every: int = 5) -> None:
    topics = list(POLICIES)
    # Kill a writer while it creates each topic in the fresh directory.
    for topic in topics:
        harness.run_writer(topic, early=True)
    harness.check(full=True)
    for number in range(rounds):
        topic = topics[number % len(topics)]
        harness.run_writer(topic, early=False)
        if number % 2 == 1:
            # The next writer recovers what the killed one left, and dies while doing so.
            harness.run_writer(topics[(number // 2) % len(topics)], early=True)
        harness.check(full=(number + 1) % full_check_every == 0 or number == rounds - 1)


def crash_seed() -> int:
    seed = int(os.environ.get("HEADWATER_CRASH_SEED", random.randrange(2**31)))
    print(f"crash seed: {seed} (replay with HEADWATER_CRASH_SEED={seed})")
    return seed


def test_sigkill_rounds(tmp_path: Path) -> None:
    """>= 20 SIGKILLs of a real writer process, every flush policy, some during recovery."""
    harness = CrashHarness(tmp_path / "data", tmp_path, crash_seed())
    started = time.monotonic()
    run_crash_rounds(harness, rounds=14)
    elapsed = time.monotonic() - started
    print(
        f"{harness.kills} kills ({harness.early_kills} early, {harness.early_kills_during_open} "
        f"during open), {harness.acks} acks, {harness.checks} checks, "
        f"{harness.truncated_bytes} torn bytes cut, {elapsed:.1f} s"
    )
    assert harness.kills >= 20
    assert harness.acks > 0, "no writer acknowledged anything: the test tested nothing"
    assert set(harness.created) == set(POLICIES)
    assert harness.early_kills_during_open >= 1, "no early kill landed while the writer was opening"


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_sigkill_soak(tmp_path: Path) -> None:
    """>= 200 SIGKILLs; a fresh data directory every 40 rounds keeps each open affordable."""
    seed = crash_seed()
    kills = 0
    for series in range(4):
        directory = tmp_path / f"series-{series}"
        directory.mkdir()
        harness = CrashHarness(directory / "data", directory, seed + series)
        run_crash_rounds(harness, rounds=40)
        assert harness.acks > 0
        kills += harness.kills
        shutil.rmtree(directory / "data")
    print(f"{kills} kills")
    assert kills >= 200


# --- crash images: torn tails, garbage, bit flips -------------------------------------------

TOPIC = "t"
SEGMENT_BYTES = 16 * 1024
INDEX_INTERVAL = 256


@dataclass(frozen=True)
class Image:
    """A data directory copied while its manager was open (a crash), and the same cleanly closed."""

    crashed: Path
    clean: Path
    end: int
    recovery_point: int  # what the crashed copy's checkpoint says


def append_batch(log: PartitionLog, rng: random.Random, count: int | None = None) -> None:
    base = log.log_end_offset
    count = rng.randint(1, 4) if count is None else count
    result = log.append_records([NewRecord(*expected_record(0, base + i)) for i in range(count)])
    assert result.base_offset == base


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    root = tmp_path_factory.mktemp("image")
    source = root / "source"
    rng = random.Random(20240601)
    manager = LogManager(str(source))
    manager.create_topic(
        TOPIC, 1, {"segment.bytes": str(SEGMENT_BYTES), "index.interval.bytes": str(INDEX_INTERVAL)}
    )
    log = manager.partition(TOPIC, 0)
    while len(log.segments) < 4:
        append_batch(log, rng)
    manager.checkpoint()
    recovery_point = log.log_end_offset
    # Past the checkpoint: one whole segment, then an active segment of several batches, the
    # last of them holding several records.
    rolled_at = len(log.segments)
    count = 0
    while (
        len(log.segments) < rolled_at + 2
        or len(segment_batches(Path(log.segments[-1].path))) < 5
        or count < 2
    ):
        count = rng.randint(1, 4)
        append_batch(log, rng, count)
    crashed = root / "crashed"
    shutil.copytree(source, crashed)
    end = log.log_end_offset
    manager.close()
    assert not (crashed / CLEAN_SHUTDOWN_FILE).exists()
    assert (source / CLEAN_SHUTDOWN_FILE).exists()
    return Image(crashed, source, end, recovery_point)


@pytest.fixture
def crashed(image: Image, tmp_path: Path) -> Path:
    target = tmp_path / "crashed"
    shutil.copytree(image.crashed, target)
    return target


def partition_dir(data_dir: Path) -> Path:
    return data_dir / f"{TOPIC}-0"


def open_and_check(data_dir: Path, end: int, context: str) -> LogManager:
    """Open, check the exact prefix, every offset and timestamp lookup, verify(), and append."""
    manager = LogManager(str(data_dir))
    log = manager.partition(TOPIC, 0)
    assert_exact_prefix(log, 0, end, context=context)
    for offset in range(end):
        first = log.read_records(offset, 1).records[0]
        check_record(first, 0, offset, f"{context} read at {offset}")
    assert_timestamp_lookup(log, list(range(end)), context)
    assert log.offset_for_timestamp(BASE_TIMESTAMP_MS + end) is None
    assert log.verify() == [], context
    return manager


def reopen_after_append(manager: LogManager, data_dir: Path, end: int, context: str) -> None:
    """Append one batch at `end`, close cleanly, check the index files and reopen."""
    log = manager.partition(TOPIC, 0)
    append_batch(log, random.Random(end), count=2)
    manager.close()
    assert_index_files(partition_dir(data_dir), INDEX_INTERVAL)
    with LogManager(str(data_dir)) as again:
        assert_exact_prefix(again.partition(TOPIC, 0), 0, end + 2, context=f"{context} reopened")
        assert again.partition(TOPIC, 0).verify() == []


def test_crash_image_recovers_whole(image: Image, crashed: Path) -> None:
    """The undamaged crash image: nothing lost, indexes rebuilt from the recovery point."""
    manager = open_and_check(crashed, image.end, "undamaged")
    report = manager.recovery[f"{TOPIC}-0"]
    assert report.truncated_bytes == 0 and report.problems == []
    assert report.segments_validated >= 2, "the segments past the recovery point are re-validated"
    reopen_after_append(manager, crashed, image.end, "undamaged")


def test_torn_last_batch_at_many_cut_points(image: Image, tmp_path: Path) -> None:
    """Cut the last .log inside its last batch (header, records, last byte): that batch goes."""
    last_log = log_files(partition_dir(image.crashed))[-1]
    position, size, base, _ = segment_batches(last_log)[-1]
    rng = random.Random(7)
    inside = [*range(1, BATCH_HEADER_SIZE + 2, 4), 8, 12, 17, 21, 60, 61, 62, size - 1]
    inside += rng.sample(range(BATCH_HEADER_SIZE + 2, size - 1), 12)
    cuts = sorted({position + delta for delta in [0, *inside] if 0 <= delta < size})
    assert len(cuts) >= 30
    for number, cut in enumerate(cuts):
        data_dir = tmp_path / f"cut-{number}"
        shutil.copytree(image.crashed, data_dir)
        os.truncate(log_files(partition_dir(data_dir))[-1], cut)
        context = f"cut at {cut} ({cut - position} bytes into the batch at offset {base})"
        manager = open_and_check(data_dir, base, context)
        report = manager.recovery[f"{TOPIC}-0"]
        assert report.truncated_bytes == cut - position, context
        assert last_log.name in {path.name for path in log_files(partition_dir(data_dir))}
        reopen_after_append(manager, data_dir, base, context)
        shutil.rmtree(data_dir)


def _garbage(kind: str, last_batch: bytes, end: int) -> bytes:
    rng = random.Random(kind)
    if kind.startswith("zeros-"):
        return bytes(int(kind.split("-")[1]))
    if kind == "random-small":
        return rng.randbytes(37)
    if kind == "random-large":
        return rng.randbytes(70_000)
    if kind == "duplicate-last-batch":
        return last_batch  # a whole valid batch, but its offsets go backwards
    next_batch = bytearray(struct.pack(">q", end) + last_batch[8:])
    if kind == "next-batch-bad-crc":
        next_batch[BATCH_HEADER_SIZE + 3] ^= 0x40
        return bytes(next_batch)
    if kind == "next-batch-torn":
        return bytes(next_batch[: len(next_batch) - 1])
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "zeros-1",
        "zeros-61",
        "zeros-4096",
        "zeros-200000",
        "random-small",
        "random-large",
        "duplicate-last-batch",
        "next-batch-bad-crc",
        "next-batch-torn",
    ],
)
def test_garbage_tail_is_cut_away(image: Image, crashed: Path, kind: str) -> None:
    """Zeros or garbage after the last batch (a file extended by a power loss) are cut away."""
    last_log = log_files(partition_dir(crashed))[-1]
    size = last_log.stat().st_size
    position, batch_size, _, _ = segment_batches(last_log)[-1]
    last_batch = last_log.read_bytes()[position : position + batch_size]
    garbage = _garbage(kind, last_batch, image.end)
    with open(last_log, "ab") as file:
        file.write(garbage)
    manager = open_and_check(crashed, image.end, kind)
    assert last_log.stat().st_size == size, f"{kind}: the tail was not cut back to the last batch"
    assert manager.recovery[f"{TOPIC}-0"].truncated_bytes == len(garbage)
    reopen_after_append(manager, crashed, image.end, kind)


def _flip(path: Path, position: int) -> None:
    with open(path, "r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0x5A]))


@pytest.mark.parametrize(
    ("where", "delta"),
    [
        ("last-batch", "middle"),
        ("last-batch", "crc"),
        ("last-batch", "record-count"),
        ("active-middle", "middle"),
        ("closed-segment", "middle"),
    ],
)
def test_flipped_byte_past_recovery_point_drops_the_rest(
    image: Image, crashed: Path, where: str, delta: str
) -> None:
    """A corrupt batch past the recovery point: it and everything after it are dropped."""
    logs = log_files(partition_dir(crashed))
    segment = logs[-2] if where == "closed-segment" else logs[-1]
    batches = segment_batches(segment)
    position, size, base, _ = batches[-1] if where == "last-batch" else batches[len(batches) // 2]
    assert base >= image.recovery_point, "the damaged batch lies past the recovery point"
    offset_in_batch = {"middle": BATCH_HEADER_SIZE + (size - BATCH_HEADER_SIZE) // 2, "crc": 18}
    _flip(segment, position + offset_in_batch.get(delta, 59))  # 59: inside record count
    manager = open_and_check(crashed, base, f"{where}/{delta}")
    remaining = {path.name for path in log_files(partition_dir(crashed))}
    assert segment.name in remaining
    later = [path.name for path in logs if path.name > segment.name]
    assert not remaining & set(later), f"segments after the cut survived: {remaining & set(later)}"
    assert segment.stat().st_size == position, "the segment is cut at the damaged batch"
    reopen_after_append(manager, crashed, base, where)


@pytest.mark.parametrize("shutdown", ["crashed", "clean"])
def test_flipped_byte_in_trusted_segment_is_never_served(
    image: Image, tmp_path: Path, shutdown: str
) -> None:
    """A bit flip below the recovery point is not re-validated at open, so reads must catch it."""
    data_dir = tmp_path / shutdown
    shutil.copytree(image.crashed if shutdown == "crashed" else image.clean, data_dir)
    first = log_files(partition_dir(data_dir))[0]
    batches = segment_batches(first)
    assert batches[-1][3] < image.recovery_point, "the first segment is trusted"
    index = len(batches) // 2
    position, size, base, last = batches[index]
    _flip(first, position + BATCH_HEADER_SIZE + (size - BATCH_HEADER_SIZE) // 2)
    with LogManager(str(data_dir)) as manager:
        log = manager.partition(TOPIC, 0)
        assert log.log_end_offset == image.end
        for offset in (base, last):
            for max_bytes in (1, 1 << 20):
                with pytest.raises(CorruptRecordError) as caught:
                    log.read_records(offset, max_bytes)
                message = str(caught.value)
                assert f"topic '{TOPIC}'" in message and "partition 0" in message, message
                assert f"offset {base}" in message, message
        with pytest.raises(CorruptRecordError):
            list(read_all(log, 0))  # a scan from the start stops at the damage, serving nothing
        # The batches around the damaged one are still served.
        before = batches[index - 1]
        records = log.read_records(before[2], 1).records
        assert [record.offset for record in records] == list(range(before[2], before[3] + 1))
        for record in records:
            check_record(record, 0, record.offset, "before the damage")
        after = log.read_records(last + 1, 1).records
        assert after and after[0].offset == last + 1
        check_record(after[0], 0, last + 1, "after the damage")
        problems = log.verify()
        assert len(problems) == 1 and f"offset {base}" in problems[0], problems
        assert f"topic '{TOPIC}' partition 0" in problems[0], problems


INDEX_DAMAGE = [
    "delete-index",
    "delete-timeindex",
    "delete-both",
    "partial-entry",
    "garbage",
    "zeros",
]


def _damage_indexes(partition: Path, kind: str) -> None:
    rng = random.Random(kind)
    for log_path in log_files(partition):
        for path in (log_path.with_suffix(".index"), log_path.with_suffix(".timeindex")):
            if kind == "delete-both" or kind == f"delete-{path.suffix[1:]}":
                path.unlink(missing_ok=True)
            elif kind == "partial-entry":
                path.write_bytes(path.read_bytes() + b"\x01\x02\x03")
            elif kind == "garbage":
                path.write_bytes(rng.randbytes(max(len(path.read_bytes()), 48)))
            elif kind == "zeros":
                path.write_bytes(bytes(max(len(path.read_bytes()), 48)))


@pytest.mark.parametrize("shutdown", ["crashed", "clean"])
@pytest.mark.parametrize("kind", INDEX_DAMAGE)
def test_damaged_index_files_are_rebuilt(
    image: Image, tmp_path: Path, shutdown: str, kind: str
) -> None:
    """Deleted or corrupt .index/.timeindex files: reads stay correct and the indexes come back."""
    data_dir = tmp_path / shutdown
    shutil.copytree(image.crashed if shutdown == "crashed" else image.clean, data_dir)
    _damage_indexes(partition_dir(data_dir), kind)
    context = f"{kind} after {shutdown} shutdown"
    manager = open_and_check(data_dir, image.end, context)
    log = manager.partition(TOPIC, 0)
    assert log.max_timestamp() == (image.end - 1, BASE_TIMESTAMP_MS + image.end - 1), context
    reopen_after_append(manager, data_dir, image.end, context)


def test_deleted_time_index_keeps_segment_max_timestamp(tmp_path: Path) -> None:
    """With out-of-order timestamps a segment's maximum is in an early batch: losing the time
    index must not lose it (retention and ListOffsets MAX_TIMESTAMP depend on it)."""
    data_dir = tmp_path / "data"
    future = BASE_TIMESTAMP_MS + 10**9
    with LogManager(str(data_dir)) as manager:
        manager.create_topic(TOPIC, 1, {"segment.bytes": "4096", "index.interval.bytes": "256"})
        log = manager.partition(TOPIC, 0)
        log.append_records([NewRecord(None, b"early" * 20, future)])
        for number in range(1, 60):
            log.append_records([NewRecord(None, b"later" * 20, BASE_TIMESTAMP_MS + number)])
        assert log.max_timestamp() == (0, future)
        assert len(log.segments) >= 2
    first = log_files(partition_dir(data_dir))[0]
    first.with_suffix(".timeindex").unlink()
    with LogManager(str(data_dir)) as manager:
        log = manager.partition(TOPIC, 0)
        assert log.offset_for_timestamp(future) == (0, future)
        assert log.max_timestamp() == (0, future)
        assert log.segments[0].max_timestamp == future


@pytest.mark.parametrize("shutdown", ["crashed", "clean"])
def test_leftover_compaction_files_on_open(image: Image, tmp_path: Path, shutdown: str) -> None:
    """Loader pass 1: `.cleaned` and `.tmp` files go, a `.log.swap` replaces its `.log`, and
    indexes without a `.log` are removed."""
    data_dir = tmp_path / shutdown
    shutil.copytree(image.crashed if shutdown == "crashed" else image.clean, data_dir)
    partition = partition_dir(data_dir)
    first = log_files(partition)[0]
    batches = segment_batches(first)
    data = first.read_bytes()
    # A compaction that completed but was not installed: every other batch survived.
    kept = [batch for number, batch in enumerate(batches) if number % 2 == 0]
    dropped = [batch for number, batch in enumerate(batches) if number % 2 == 1]
    swap = b"".join(data[position : position + size] for position, size, _, _ in kept)
    Path(f"{first}.swap").write_bytes(swap)
    # A compaction that did not complete, a temporary file, and orphaned indexes.
    second = log_files(partition)[1]
    Path(f"{second}.cleaned").write_bytes(b"half-written cleaned segment")
    (partition / f"{second.name}.tmp").write_bytes(b"temporary")
    orphan = 10**15
    for suffix in (".index", ".timeindex"):
        (partition / f"{orphan:020d}{suffix}").write_bytes(bytes(24))

    removed = {offset for _, _, base, last in dropped for offset in range(base, last + 1)}
    expected = [offset for offset in range(image.end) if offset not in removed]
    with LogManager(str(data_dir)) as manager:
        log = manager.partition(TOPIC, 0)
        names = sorted(path.name for path in partition.iterdir())
        assert not [name for name in names if name.endswith((".swap", ".cleaned", ".tmp"))], names
        assert f"{orphan:020d}.index" not in names and f"{orphan:020d}.timeindex" not in names
        assert first.read_bytes() == swap
        assert log.log_end_offset == image.end
        records = list(read_all(log))
        assert [record.offset for record in records] == expected
        for record in records:
            check_record(record, 0, record.offset, "after the swap")
        for _, _, base, last in dropped:
            # Reading a compacted-away offset returns the next record that survived.
            assert log.read_records(base, 1).records[0].offset == last + 1
            assert log.offset_for_timestamp(BASE_TIMESTAMP_MS + base) == (
                last + 1,
                BASE_TIMESTAMP_MS + last + 1,
            )
        assert log.verify() == []
    with LogManager(str(data_dir)) as manager:
        assert [record.offset for record in read_all(manager.partition(TOPIC, 0))] == expected


def test_swapped_in_segment_gets_indexes(image: Image, tmp_path: Path) -> None:
    """The loader deletes a swapped segment's stale indexes; they must be rebuilt, not left
    empty (every read of that segment would then scan it from its first byte)."""
    data_dir = tmp_path / "clean"
    shutil.copytree(image.clean, data_dir)
    first = log_files(partition_dir(data_dir))[0]
    batches = segment_batches(first)
    data = first.read_bytes()
    kept = [batch for number, batch in enumerate(batches) if number != 1]
    Path(f"{first}.swap").write_bytes(
        b"".join(data[position : position + size] for position, size, _, _ in kept)
    )
    with LogManager(str(data_dir)) as manager:
        assert manager.partition(TOPIC, 0).verify() == []
    assert_index_files(partition_dir(data_dir), INDEX_INTERVAL)


def test_failed_fsync_is_not_a_clean_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an fsync of log data fails, the kernel may have dropped the dirty pages: the file
    keeps its size but holds zeros where the unsynced batches were. The close that follows must
    not mark the directory clean, or the next open trusts that tail instead of recovering it."""
    data_dir = tmp_path / "data"
    manager = LogManager(str(data_dir))
    manager.create_topic(TOPIC, 1, {"segment.bytes": str(SEGMENT_BYTES)})
    log = manager.partition(TOPIC, 0)
    rng = random.Random(3)
    for _ in range(5):
        append_batch(log, rng)
    durable_end = log.log_end_offset
    active = Path(log.segments[-1].path)
    durable_size = active.stat().st_size
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == str(active):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError):
        append_batch(log, rng)  # written, but its fsync fails
    monkeypatch.undo()
    with pytest.raises(StorageError):
        append_batch(log, rng)  # the partition is offline now
    with contextlib.suppress(StorageError):
        manager.close()  # may report the failure; must not mark the directory clean
    # What the disk holds after the dropped pages: the unsynced tail reads back as zeros.
    size = active.stat().st_size
    assert size > durable_size
    with open(active, "r+b") as file:
        file.seek(durable_size)
        file.write(bytes(size - durable_size))
    with LogManager(str(data_dir)) as again:
        log = again.partition(TOPIC, 0)
        assert_exact_prefix(log, 0, durable_end, context="after a failed fsync")
        assert log.verify() == []
        append_batch(log, rng)
        assert log.log_end_offset > durable_end

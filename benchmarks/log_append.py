"""Log engine throughput: appends and sequential reads, beside plain file I/O of the same bytes.

Not a test: it prints numbers. Run `make bench` or `python benchmarks/log_append.py`.
Batches of 1,000 records are encoded once up front (the broker stores what clients send, so an
append is the batch as received); encoding speed is reported on its own line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time

from headwater.log.manager import LogManager
from headwater.log.record_batch import NewRecord, encode_batch, iter_batches

RECORDS_PER_BATCH = 1_000


def _batches(value_bytes: int, batch_count: int) -> list[bytes]:
    value = os.urandom(value_bytes)
    records = [
        NewRecord(None, value, 1_700_000_000_000 + index) for index in range(RECORDS_PER_BATCH)
    ]
    batch = encode_batch(records)
    return [batch] * batch_count


def _plain_write(directory: str, batches: list[bytes], fsync_each: bool) -> float:
    path = os.path.join(directory, "plain.bin")
    os.sync()  # each timed write starts with no dirty pages queued ahead of it
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    for batch in batches:
        os.write(fd, batch)
        if fsync_each:
            os.fsync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return elapsed


def _plain_read(directory: str, chunk_bytes: int) -> tuple[float, int]:
    path = os.path.join(directory, "plain.bin")
    fd = os.open(path, os.O_RDONLY)
    total = 0
    start = time.perf_counter()
    while True:
        data = os.pread(fd, chunk_bytes, total)
        if not data:
            break
        total += len(data)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return elapsed, total


def _log_append(
    directory: str, batches: list[bytes], flush_messages: int, threads: int = 1
) -> float:
    with LogManager(os.path.join(directory, "data"), owner="benchmark") as manager:
        manager.create_topic("bench", 1, {"flush.messages": str(flush_messages)})
        log = manager.partition("bench", 0)
        os.sync()
        per_thread = len(batches) // threads

        def work(chunk: list[bytes]) -> None:
            for batch in chunk:
                log.append(batch)

        start = time.perf_counter()
        workers = [
            threading.Thread(target=work, args=(batches[i * per_thread : (i + 1) * per_thread],))
            for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - start


def _interleaved_append(directory: str, batches: list[bytes]) -> tuple[float, float]:
    """Plain writes and log appends of the same batches, alternating batch by batch.

    Alternating puts both under the same page-cache and writeback conditions, which otherwise
    swing either figure by 2x on this machine depending on which runs first.
    """
    plain_fd = os.open(
        os.path.join(directory, "plain.bin"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
    )
    plain = logged = 0.0
    clock = time.perf_counter
    with LogManager(os.path.join(directory, "data"), owner="benchmark") as manager:
        manager.create_topic("bench", 1, {"flush.messages": str(2**63 - 1)})
        log = manager.partition("bench", 0)
        os.sync()
        for batch in batches:
            start = clock()
            os.write(plain_fd, batch)
            middle = clock()
            log.append(batch)
            plain += middle - start
            logged += clock() - middle
    os.close(plain_fd)
    return plain, logged


def _log_read(directory: str, chunk_bytes: int) -> tuple[float, int, int]:
    """Sequential 1 MiB fetches of whole batches, as the broker serves them: the bytes, and the
    offset to fetch next (from the index when the read ended on an indexed boundary, else by
    walking the batch headers)."""
    with LogManager(os.path.join(directory, "data"), owner="benchmark") as manager:
        log = manager.partition("bench", 0)
        offset = 0
        total = 0
        start = time.perf_counter()
        end = log.high_watermark
        while offset < end:
            result = log.read(offset, chunk_bytes)
            data = result.read_bytes()
            next_offset = result.next_offset
            if next_offset < 0:
                for _, header in iter_batches(data):
                    next_offset = header.last_offset + 1
            total += len(data)
            offset = next_offset
        return time.perf_counter() - start, total, offset


def _line(label: str, records: int, size: int, seconds: float, reference: float | None) -> str:
    ratio = f"  {reference / seconds:6.1%} of plain" if reference else ""
    return (
        f"{label:<44} {records / seconds:>13,.0f} rec/s {size / seconds / 1e6:>9,.1f} MB/s{ratio}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=400, help="bytes written per case")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept)")
    args = parser.parse_args()
    for value_bytes in (100, 1024):
        sample = _batches(value_bytes, 1)[0]
        batch_count = max(10, args.megabytes * 1_000_000 // len(sample))
        batches = _batches(value_bytes, batch_count)
        records = batch_count * RECORDS_PER_BATCH
        size = batch_count * len(sample)
        print(
            f"\n{value_bytes} B values, batches of {RECORDS_PER_BATCH:,} ({len(sample):,} B), {size / 1e6:,.0f} MB"
        )
        plain_w, log_w, plain_r, log_r = [], [], [], []
        for _ in range(args.repeat):
            directory = tempfile.mkdtemp(prefix="headwater-bench-", dir=os.environ.get("BENCH_DIR"))
            try:
                plain_seconds, log_seconds = _interleaved_append(directory, batches)
                plain_w.append(plain_seconds)
                log_w.append(log_seconds)
                plain_r.append(_plain_read(directory, 1024 * 1024)[0])
                elapsed, read_bytes, read_records = _log_read(directory, 1024 * 1024)
                assert read_bytes == size and read_records == records, (
                    read_bytes,
                    size,
                )  # every byte once
                log_r.append(elapsed)
            finally:
                shutil.rmtree(directory)
        print(
            _line(
                "plain write (page cache, no fsync, interleaved)", records, size, min(plain_w), None
            )
        )
        print(_line("log append, fsync left to the OS", records, size, min(log_w), min(plain_w)))
        print(_line("plain read (1 MiB preads)", records, size, min(plain_r), None))
        print(
            _line(
                "log read (1 MiB fetches, whole batches)", records, size, min(log_r), min(plain_r)
            )
        )

        # Durable appends: a plain write+fsync per batch beside the log's group commit.
        few = batches[: max(20, min(400, batch_count // 10))]
        few_records = len(few) * RECORDS_PER_BATCH
        few_size = len(few) * len(sample)
        directory = tempfile.mkdtemp(prefix="headwater-bench-", dir=os.environ.get("BENCH_DIR"))
        try:
            plain_sync = _plain_write(directory, few, True)
            one = _log_append(directory, few, 1)
            shutil.rmtree(os.path.join(directory, "data"))
            four = _log_append(directory, few, 1, threads=4)
        finally:
            shutil.rmtree(directory)
        print(_line("plain write + fsync per batch", few_records, few_size, plain_sync, None))
        print(
            _line(
                "log append, fsync every append, 1 thread", few_records, few_size, one, plain_sync
            )
        )
        print(
            _line(
                "log append, fsync every append, 4 threads", few_records, few_size, four, plain_sync
            )
        )

    # Encoding a batch in Python (what the embedded producer pays).
    records = [
        NewRecord(None, os.urandom(100), 1_700_000_000_000 + i) for i in range(RECORDS_PER_BATCH)
    ]
    timings = []
    for _ in range(20):
        start = time.perf_counter()
        encode_batch(records)
        timings.append(time.perf_counter() - start)
    best = min(timings)
    print(
        f"\nencode_batch, 1,000 x 100 B records: {RECORDS_PER_BATCH / best:,.0f} rec/s "
        f"(median {RECORDS_PER_BATCH / statistics.median(timings):,.0f})"
    )


if __name__ == "__main__":
    main()

"""A writer for the crash tests, run as a subprocess and killed with SIGKILL at random times.

Usage: crash_writer.py DATA_DIR TOPIC FLUSH_MESSAGES SEED

Opens a `LogManager` on DATA_DIR, creates TOPIC if it is missing (small segments, so they roll
often) and appends batches of deterministic records to every partition until it is killed. The
record at offset i of partition p is `expected_record(p, i)` whatever the run, so a run that
starts after a crash resumes the sequence from the log end it recovered.

Protocol on stdout, one line each, flushed at once:
  opening                 about to open the data directory (recovery runs next)
  opened                  the manager is open and the topic exists
  start P END             partition P resumes at offset END
  ack P OFFSET            every record of partition P up to OFFSET is durable

An `ack` is printed only once the flush policy made the records durable: after every append
with flush.messages=1, otherwise only after an explicit `flush()` (every few batches, or when
`flush_due` says so). SEED varies batch sizes, codecs and timing, never the content.

Not collected by pytest (no test_ prefix); the crash tests import `expected_record` from it.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import traceback

PARTITIONS = 2
SEGMENT_BYTES = 64 * 1024
INDEX_INTERVAL_BYTES = 1024
MAX_PAYLOAD_BYTES = 2000
MAX_RECORDS_PER_BATCH = 5
# Appending threads per partition: they share a lock to number their batches, and flush
# outside it, so the log's group commit sees concurrent flushers.
THREADS_PER_PARTITION = 2
# With flush.messages > 1, flush explicitly after this many batches of one thread.
FLUSH_EVERY_BATCHES = 6
BASE_TIMESTAMP_MS = 1_700_000_000_000


def topic_configs(flush_messages: int) -> dict[str, str]:
    return {
        "segment.bytes": str(SEGMENT_BYTES),
        "index.interval.bytes": str(INDEX_INTERVAL_BYTES),
        "flush.messages": str(flush_messages),
    }


def expected_record(partition: int, offset: int) -> tuple[bytes | None, bytes, int]:
    """(key, value, timestamp) of the record at `offset` of `partition`: a function of both only."""
    rng = random.Random((partition << 48) | offset)
    size = rng.randrange(MAX_PAYLOAD_BYTES + 1)
    key = None if rng.random() < 0.25 else b"key-%d" % (offset % 97)
    value = b"%d:%012d:" % (partition, offset) + rng.randbytes(size)
    return key, value, BASE_TIMESTAMP_MS + offset


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        sys.stderr.write(__doc__ or "")
        return 2
    data_dir, topic, flush_messages, seed = argv[1], argv[2], int(argv[3]), int(argv[4])

    from headwater.log.compression import Compression
    from headwater.log.manager import LogManager
    from headwater.log.record_batch import NewRecord

    output_lock = threading.Lock()

    def emit(line: str) -> None:
        with output_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    emit("opening")
    manager = LogManager(data_dir, owner="crash_writer")
    if not manager.has_topic(topic):
        manager.create_topic(topic, PARTITIONS, topic_configs(flush_messages))
    configured = manager.topic(topic).config.flush_messages
    if configured != flush_messages:  # acks would not match the topic's real policy
        sys.stderr.write(f"{topic} has flush.messages={configured}, not {flush_messages}\n")
        return 2
    emit("opened")

    def append_forever(partition: int, thread: int, numbering: threading.Lock) -> None:
        log = manager.partition(topic, partition)
        rng = random.Random(seed * 1_000 + partition * 10 + thread)
        codecs = list(Compression)
        batches = 0
        try:
            while True:
                count = rng.randint(1, MAX_RECORDS_PER_BATCH)
                codec = Compression.NONE if rng.random() < 0.8 else rng.choice(codecs)
                durable_in_append = flush_messages == 1 and thread == 0
                with numbering:
                    base = log.log_end_offset
                    records = [
                        NewRecord(*expected_record(partition, base + i)) for i in range(count)
                    ]
                    # Thread 0 with flush.messages=1 lets `append` fsync (group commit) before it
                    # returns; every other thread appends and flushes on its own below.
                    result = log.append_records(
                        records, compression=codec, wait_for_flush=durable_in_append
                    )
                if result.base_offset != base or result.last_offset != base + count - 1:
                    raise AssertionError(f"appended at {result}, expected base {base}")
                batches += 1
                if durable_in_append:
                    emit(f"ack {partition} {result.last_offset}")
                elif flush_messages == 1 or result.flush_due or batches % FLUSH_EVERY_BATCHES == 0:
                    log.flush(result.last_offset + 1)
                    emit(f"ack {partition} {result.last_offset}")
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(3)

    threads = []
    for partition in range(PARTITIONS):
        emit(f"start {partition} {manager.partition(topic, partition).log_end_offset}")
        numbering = threading.Lock()
        for thread in range(THREADS_PER_PARTITION):
            threads.append(
                threading.Thread(
                    target=append_forever, args=(partition, thread, numbering), daemon=True
                )
            )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""A group member in its own process, for the conformance test that SIGKILLs one.

Usage: python member_process.py URL GROUP TOPIC OUT_FILE [DELAY_MS]

Connects with `headwater.connect(URL)`, subscribes to TOPIC in GROUP (manual commits) and
appends one flushed line per event to OUT_FILE:
  A p,p,..   partitions assigned        R p,p,..   partitions revoked
  C p o      record at offset o read    K p o      offset o committed for p (synchronously,
                                                   after every record, before the next poll)
Sleeps DELAY_MS after each record, so a test can kill it mid-stream.
"""

from __future__ import annotations

import sys
import time

import headwater
from headwater.client import TopicPartition


def main(url: str, group: str, topic: str, out_path: str, delay_ms: int = 0) -> None:
    with open(out_path, "a", buffering=1) as out:

        def emit(kind: str, partitions: list[TopicPartition]) -> None:
            out.write(f"{kind} {','.join(str(tp.partition) for tp in partitions) or '-'}\n")
            out.flush()

        with headwater.connect(url) as client:
            consumer = client.consumer(
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=300,
                fetch_max_wait_ms=50,
            )
            consumer.subscribe(
                [topic],
                on_assign=lambda _, assigned: emit("A", assigned),
                on_revoke=lambda _, revoked: emit("R", revoked),
            )
            while True:
                record = consumer.poll(0.1)
                if record is None:
                    continue
                out.write(f"C {record.partition} {record.offset}\n")
                out.flush()
                consumer.commit({TopicPartition(topic, record.partition): record.offset + 1})
                out.write(f"K {record.partition} {record.offset + 1}\n")
                out.flush()
                time.sleep(delay_ms / 1000)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], args[2], args[3], int(args[4]) if len(args) > 4 else 0)

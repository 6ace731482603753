"""A consumer-group member in its own process, for tests that SIGKILL one (test_group_interop).

Usage: python group_member.py BOOTSTRAP GROUP TOPIC OUT_FILE [DELAY_MS]

Subscribes to TOPIC in GROUP (librdkafka, manual commits) and appends to OUT_FILE, one flushed
line per event, space-separated:
  A p,p,..     partitions assigned        R p,p,..   partitions revoked
  C p o value  a record consumed          K p o      offset o committed for p (synchronously,
                                                     after every record, before the next poll)
  E name       a failed commit
Sleeps DELAY_MS after each record (a slow member is easy to kill mid-stream). SIGTERM closes
the consumer and exits 0.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaException, TopicPartition


def main(bootstrap: str, group: str, topic: str, out_path: str, delay_ms: int = 0) -> int:
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    out: TextIO = open(out_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    def partitions(assigned: list[TopicPartition]) -> str:
        return ",".join(str(tp.partition) for tp in assigned) or "-"

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "log_level": 0,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            "fetch.wait.max.ms": 50,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    consumer.subscribe(
        [topic],
        on_assign=lambda _, assigned: emit(f"A {partitions(assigned)}"),
        on_revoke=lambda _, revoked: emit(f"R {partitions(revoked)}"),
    )
    while not stopping:
        message = consumer.poll(0.1)
        if message is None or message.error() is not None:
            continue
        value = (message.value() or b"").decode()
        emit(f"C {message.partition()} {message.offset()} {value}")
        try:
            consumer.commit(message=message, asynchronous=False)
        except KafkaException as error:
            emit(f"E {error.args[0].name()}")
        else:
            emit(f"K {message.partition()} {message.offset() + 1}")
        if delay_ms:
            time.sleep(delay_ms / 1000)
    consumer.close()
    out.close()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[0], args[1], args[2], args[3], int(args[4]) if len(args) > 4 else 0))

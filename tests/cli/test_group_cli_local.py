"""`headwater group ... --data-dir`: groups read and changed in a stopped broker's data directory.

A real broker makes the groups (real librdkafka consumers commit), then stops; the commands
open its data directory. What they change must be what the broker serves when it comes back:
a consumer resumes from an offset `seek` wrote, and a deleted group stays deleted.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from typer.testing import Result

from headwater.cli import app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "broker"))

from broker_process import ServedBroker, start_broker
from typer.testing import CliRunner

pytestmark = pytest.mark.timeout(120)

runner = CliRunner()
RECORDS = 10
TOPIC = "orders"


def run(data_dir: Path, *args: str) -> Result:
    result = runner.invoke(app, ["group", *args, "--data-dir", str(data_dir)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stdout + result.stderr
    return result


def ok(data_dir: Path, *args: str) -> Result:
    result = run(data_dir, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def describe(data_dir: Path, group: str) -> dict[str, Any]:
    details: dict[str, Any] = json.loads(ok(data_dir, "describe", group, "--format", "json").stdout)
    return details


def offsets(details: dict[str, Any]) -> dict[tuple[str, int], int | None]:
    return {
        (row["topic"], row["partition"]): row["committed_offset"] for row in details["partitions"]
    }


def consumer(brokers: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "log_level": 0,
        }
    )


def read_then_commit(brokers: str, group: str, count: int) -> None:
    """A member of `group` reads `count` records, commits after the last, and leaves."""
    member = consumer(brokers, group)
    try:
        member.subscribe([TOPIC])
        seen = 0
        deadline = time.monotonic() + 60
        while seen < count and time.monotonic() < deadline:
            message = member.poll(0.5)
            if message is None or message.error() is not None:
                continue
            seen += 1
            if seen == count:
                member.commit(message=message, asynchronous=False)
        assert seen == count
    finally:
        member.close()


def first_offset_read(brokers: str, group: str) -> int:
    """The offset a new member of `group` starts from."""
    member = consumer(brokers, group)
    try:
        member.subscribe([TOPIC])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = member.poll(0.5)
            if message is not None and message.error() is None:
                offset: int = message.offset()
                return offset
        raise AssertionError("nothing consumed")
    finally:
        member.close()


@pytest.fixture
def stopped(tmp_path: Path) -> Path:
    """A data directory whose broker made groups "billing" (at 6) and "old" (at 2), then
    stopped; "live" was still consuming when the broker was SIGKILLed."""
    data_dir = tmp_path / "data"
    broker = start_broker(data_dir, tmp_path / "broker.log")
    brokers = broker.bootstrap
    producer = Producer({"bootstrap.servers": brokers, "log_level": 0})
    for index in range(RECORDS):
        producer.produce(
            TOPIC, value=f"v{index}".encode(), partition=0, timestamp=1000 * (index + 1)
        )
    assert producer.flush(30) == 0
    read_then_commit(brokers, "billing", 6)
    read_then_commit(brokers, "old", 2)
    live = consumer(brokers, "live")
    live.subscribe([TOPIC])
    deadline = time.monotonic() + 60
    while not live.assignment() and time.monotonic() < deadline:
        live.poll(0.2)
    assert live.assignment()
    broker.stop(signal.SIGKILL)  # "live" never leaves: its member is in the stored group
    live.close()
    return data_dir


def restart(data_dir: Path, tmp_path: Path) -> ServedBroker:
    return start_broker(data_dir, tmp_path / "broker-again.log")


def test_list_and_describe(stopped: Path) -> None:
    rows = json.loads(ok(stopped, "list", "--format", "json").stdout)
    by_group = {row["group"]: row for row in rows}
    assert set(by_group) == {"billing", "old", "live"}
    # The live member's process is gone with its broker: nobody is in any group.
    assert {row["state"] for row in rows} == {"Empty"}
    assert {row["protocol_type"] for row in rows} == {"consumer"}
    details = describe(stopped, "billing")
    assert details["state"] == "Empty" and details["members"] == []
    (row,) = details["partitions"]
    assert (row["topic"], row["partition"], row["committed_offset"]) == (TOPIC, 0, 6)
    assert (row["log_end_offset"], row["lag"]) == (RECORDS, RECORDS - 6)
    table = ok(stopped, "describe", "billing").stdout
    assert [TOPIC, "0", "6", str(RECORDS), str(RECORDS - 6)] == next(
        line.split()[:5] for line in table.splitlines() if line.startswith(TOPIC)
    )
    result = run(stopped, "describe", "no-such-group")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: unknown group 'no-such-group'"


def test_seek_is_what_the_restarted_broker_serves(stopped: Path, tmp_path: Path) -> None:
    ok(stopped, "seek", "billing", "--to-earliest")
    assert offsets(describe(stopped, "billing")) == {(TOPIC, 0): 0}
    ok(stopped, "seek", "billing", "--to-latest")
    assert offsets(describe(stopped, "billing")) == {(TOPIC, 0): RECORDS}
    ok(stopped, "seek", "billing", "--to-offset", "1000")  # clamped to the log end
    assert offsets(describe(stopped, "billing")) == {(TOPIC, 0): RECORDS}
    ok(stopped, "seek", "billing", "--to-timestamp", "3500")  # the first at or after is at 3
    assert offsets(describe(stopped, "billing")) == {(TOPIC, 0): 3}
    # A group that never committed to the topic gets offsets when the topic is named.
    ok(stopped, "seek", "fresh", "--to-offset", "7", "--topic", TOPIC)
    assert offsets(describe(stopped, "fresh")) == {(TOPIC, 0): 7}
    result = run(stopped, "seek", "nobody", "--to-earliest")
    assert result.exit_code == 1
    assert "no committed offsets" in result.stderr
    broker = restart(stopped, tmp_path)
    try:
        assert first_offset_read(broker.bootstrap, "billing") == 3
        assert first_offset_read(broker.bootstrap, "fresh") == 7
    finally:
        assert broker.stop() == 0, broker.log_tail()


def test_delete_stays_deleted(stopped: Path, tmp_path: Path) -> None:
    assert ok(stopped, "delete", "old").stdout.strip() == "deleted group old"
    result = run(stopped, "delete", "old", "billing")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: unknown group 'old'"
    assert result.stdout.strip() == "deleted group billing"
    listed = json.loads(ok(stopped, "list", "--format", "json").stdout)
    assert [row["group"] for row in listed] == ["live"]
    broker = restart(stopped, tmp_path)
    try:
        assert first_offset_read(broker.bootstrap, "old") == 0  # no offset: from the beginning
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})
        groups = admin.list_consumer_groups().result(timeout=30)
        assert "billing" not in {listing.group_id for listing in groups.valid}
    finally:
        assert broker.stop() == 0, broker.log_tail()


def test_a_served_data_directory_is_refused(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "data", tmp_path / "broker.log")
    try:
        result = run(tmp_path / "data", "list")
        assert result.exit_code == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and "headwater serve" in line, line
    finally:
        assert broker.stop() == 0


def test_a_missing_data_directory_is_one_error_line(tmp_path: Path) -> None:
    result = run(tmp_path / "nowhere", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: data directory {tmp_path / 'nowhere'} does not exist")

"""`headwater group list|describe|delete|seek --brokers`: consumer groups against a real
`headwater serve`, through typer's CliRunner on an app that mounts `group_app`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from confluent_kafka import Consumer, Producer
from typer.testing import CliRunner, Result

from headwater.cli._common import BrokersOption, remember_brokers
from headwater.cli._group import group_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "broker"))

from broker_process import ServedBroker, start_broker

app = typer.Typer(no_args_is_help=True)
app.add_typer(group_app)


@app.callback()
def _root(ctx: typer.Context, brokers: BrokersOption = None) -> None:
    remember_brokers(ctx, brokers)


runner = CliRunner()
RECORDS = 10


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    directory = tmp_path_factory.mktemp("groups")
    broker = start_broker(directory / "data", directory / "broker.log")
    yield broker
    code = broker.stop()
    assert code == 0, f"broker did not shut down cleanly ({code}): {broker.log_tail()}"


def run(brokers: str, *args: str) -> Result:
    result = runner.invoke(app, ["group", *args, "--brokers", brokers])
    # Never a traceback: either success or a clean exit with one "error: ..." line.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.stdout,
        result.stderr,
        result.exception,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def ok(brokers: str, *args: str) -> Result:
    result = run(brokers, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def describe(brokers: str, group: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ok(brokers, "describe", group, "--format", "json").stdout)
    return result


def offsets(details: dict[str, Any]) -> dict[tuple[str, int], int | None]:
    return {
        (row["topic"], row["partition"]): row["committed_offset"] for row in details["partitions"]
    }


def produce(brokers: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": brokers})
    for index in range(count):
        producer.produce(topic, value=f"v{index}".encode(), partition=0)
    assert producer.flush(30) == 0


def commit_some(brokers: str, topic: str, group: str, count: int) -> None:
    """A consumer in `group` reads `count` records from `topic`, commits, and leaves."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "client.id": "group-test",
        }
    )
    try:
        consumer.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + 60
        while seen < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            seen += 1
            if seen == count:
                consumer.commit(message=message, asynchronous=False)
        assert seen == count
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def setup(served: ServedBroker) -> tuple[str, str, str]:
    """A topic with RECORDS records and a group that committed after reading 6 of them."""
    brokers = served.bootstrap
    topic, group = "orders", "billing"
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    produce(brokers, topic, RECORDS)
    commit_some(brokers, topic, group, 6)
    return brokers, topic, group


def test_list_shows_the_group(setup: tuple[str, str, str]) -> None:
    brokers, _, group = setup
    table = ok(brokers, "list").stdout
    assert table.splitlines()[0].split() == ["GROUP", "STATE", "PROTOCOL-TYPE"]
    assert any(line.split()[:1] == [group] for line in table.splitlines())
    rows = json.loads(ok(brokers, "list", "--format", "json").stdout)
    (row,) = [row for row in rows if row["group"] == group]
    assert row["state"] == "Empty"
    assert row["protocol_type"] == "consumer"


def test_describe_shows_offsets_and_lag(setup: tuple[str, str, str]) -> None:
    brokers, topic, group = setup
    details = describe(brokers, group)
    assert details["state"] == "Empty"
    assert details["members"] == []
    (row,) = details["partitions"]
    assert (row["topic"], row["partition"]) == (topic, 0)
    assert row["committed_offset"] == 6
    assert row["log_end_offset"] == RECORDS
    assert row["lag"] == RECORDS - 6
    assert details["total_lag"] == RECORDS - 6
    table = ok(brokers, "describe", group).stdout
    assert "TOTAL-LAG" in table and "CURRENT-OFFSET" in table
    assert [topic, "0", "6", str(RECORDS), str(RECORDS - 6)] == next(
        line.split()[:5] for line in table.splitlines() if line.startswith(topic)
    )


def test_describe_unknown_group(setup: tuple[str, str, str]) -> None:
    brokers, _, _ = setup
    result = run(brokers, "describe", "no-such-group")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: unknown group 'no-such-group'"


def test_seek(setup: tuple[str, str, str]) -> None:
    brokers, topic, group = setup
    ok(brokers, "seek", group, "--to-earliest")
    assert offsets(describe(brokers, group)) == {(topic, 0): 0}
    assert describe(brokers, group)["total_lag"] == RECORDS
    ok(brokers, "seek", group, "--to-offset", "3", "--topic", topic)
    assert offsets(describe(brokers, group)) == {(topic, 0): 3}
    ok(brokers, "seek", group, "--to-latest")
    assert offsets(describe(brokers, group)) == {(topic, 0): RECORDS}
    # Far in the future: nothing that late, so the end of the log.
    ok(brokers, "seek", group, "--to-timestamp", "4102444800000")
    assert offsets(describe(brokers, group)) == {(topic, 0): RECORDS}
    ok(brokers, "seek", group, "--to-timestamp", "0")
    assert offsets(describe(brokers, group)) == {(topic, 0): 0}
    # Past the end: clamped to the log end offset.
    ok(brokers, "seek", group, "--to-offset", "1000")
    assert offsets(describe(brokers, group)) == {(topic, 0): RECORDS}


def test_seek_needs_exactly_one_target(setup: tuple[str, str, str]) -> None:
    brokers, _, group = setup
    assert run(brokers, "seek", group).exit_code == 2
    assert run(brokers, "seek", group, "--to-earliest", "--to-latest").exit_code == 2
    result = run(brokers, "seek", group, "--to-timestamp", "yesterday")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: timestamp 'yesterday'")


def test_seek_refuses_an_active_group(served: ServedBroker, setup: tuple[str, str, str]) -> None:
    brokers, topic, _ = setup
    group = "live"
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "client.id": "live-client",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert consumer.assignment()
        details = describe(brokers, group)
        assert details["state"] == "Stable"
        (member,) = details["members"]
        assert member["client_id"] == "live-client"
        assert member["partitions"] == [{"topic": topic, "partition": 0}]
        result = run(brokers, "seek", group, "--to-earliest", "--topic", topic)
        assert result.exit_code == 1
        assert "active member" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        consumer.close()


def test_delete(setup: tuple[str, str, str]) -> None:
    brokers, topic, _ = setup
    group = "to-delete"
    commit_some(brokers, topic, group, 2)
    assert ok(brokers, "delete", group).stdout.strip() == f"deleted group {group}"
    listed = json.loads(ok(brokers, "list", "--format", "json").stdout)
    assert group not in [row["group"] for row in listed]
    result = run(brokers, "delete", group)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: unknown group {group!r}"


def test_unreachable_brokers_are_one_error_line() -> None:
    result = run("127.0.0.1:1", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach brokers 127.0.0.1:1")

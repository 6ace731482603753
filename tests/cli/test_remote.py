"""`headwater topic ... --brokers`: the topic commands over the Kafka protocol, end to end.

Against a real `headwater serve` process and, for one round trip, a real Apache Kafka broker;
through typer's CliRunner and through real `python -m headwater` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from headwater.cli import app
from headwater.log.partitioner import partition_for_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker"))

from broker_process import ServedBroker, free_port, start_broker

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    """One `headwater serve` for the module; each test uses its own topics."""
    directory = tmp_path_factory.mktemp("remote")
    broker = start_broker(directory / "data", directory / "broker.log")
    yield broker
    code = broker.stop()
    assert code == 0, f"broker did not shut down cleanly ({code}): {broker.log_tail()}"


def run(brokers: str, *args: str, input: bytes | None = None) -> Result:
    return runner.invoke(app, [*args, "--brokers", brokers], input=input)


def ok(brokers: str, *args: str, input: bytes | None = None) -> Result:
    result = run(brokers, *args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def cli(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the real command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "headwater", *args],
        input=input,
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def describe(brokers: str, topic: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(
        ok(brokers, "topic", "describe", topic, "--format", "json").stdout
    )
    return result


def configs(details: dict[str, object]) -> dict[str, tuple[str, str]]:
    rows = details["configs"]
    assert isinstance(rows, list)
    return {row["name"]: (row["value"], row["source"]) for row in rows}


def high_watermarks(details: dict[str, object]) -> list[int]:
    rows = details["partitions"]
    assert isinstance(rows, list)
    return [row["high_watermark"] for row in rows]


# --- administration --------------------------------------------------------------------------


def test_create_list_describe_alter_grow_delete(served: ServedBroker) -> None:
    brokers = served.bootstrap
    created = ok(brokers, "topic", "create", "admin-a", "-p", "3", "-c", "retention.ms=5000")
    assert created.stdout == "created topic admin-a (3 partitions)\n"
    ok(brokers, "topic", "create", "admin-b", "-c", "cleanup.policy=compact")

    again = run(brokers, "topic", "create", "admin-a", "admin-c")
    assert again.exit_code == 1
    assert again.stderr == "error: topic 'admin-a' already exists\n"
    assert again.stdout == "created topic admin-c (1 partition)\n"

    bad = run(brokers, "topic", "create", "admin-d", "-c", "no.such.config=1")
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: cannot create topic 'admin-d': ")
    assert "no.such.config" in bad.stderr

    table = ok(brokers, "topic", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "PARTITIONS", "CLEANUP-POLICY"]
    assert ["admin-a", "3", "delete"] in [line.split() for line in table]
    assert ["admin-b", "1", "compact"] in [line.split() for line in table]
    listed = {
        row["name"]: row
        for row in json.loads(ok(brokers, "topic", "list", "--format", "json").stdout)
    }
    assert listed["admin-a"]["partitions"] == 3
    assert "admin-d" not in listed

    details = describe(brokers, "admin-a")
    assert details["name"] == "admin-a"
    assert details["topic_id"] == listed["admin-a"]["topic_id"]
    assert high_watermarks(details) == [0, 0, 0]
    assert configs(details)["retention.ms"] == ("5000", "override")
    assert configs(details)["cleanup.policy"] == ("delete", "default")
    text = ok(brokers, "topic", "describe", "admin-a").stdout
    assert "TOPIC-ID" in text and "HIGH-WATERMARK" in text and "retention.ms" in text

    altered = ok(
        brokers,
        "topic",
        "alter-config",
        "admin-a",
        "--set",
        "segment.ms=60000",
        "-d",
        "retention.ms",
    )
    assert altered.stdout == (
        "admin-a: set segment.ms=60000\nadmin-a: restored retention.ms to its default\n"
    )
    after = configs(describe(brokers, "admin-a"))
    assert after["segment.ms"] == ("60000", "override")
    assert after["retention.ms"][1] == "default"
    invalid = run(brokers, "topic", "alter-config", "admin-a", "--set", "retention.ms=soon")
    assert invalid.exit_code == 1
    assert invalid.stderr.startswith("error: cannot alter topic 'admin-a': ")

    grown = ok(brokers, "topic", "add-partitions", "admin-a", "--num", "2")
    assert grown.stdout == "added 2 partitions to admin-a: now 5\n"
    assert len(high_watermarks(describe(brokers, "admin-a"))) == 5

    deleted = run(brokers, "topic", "delete", "admin-a", "admin-b", "admin-c", "admin-nope")
    assert deleted.exit_code == 1
    assert deleted.stdout.splitlines() == [
        "deleted topic admin-a",
        "deleted topic admin-b",
        "deleted topic admin-c",
    ]
    assert deleted.stderr == "error: unknown topic 'admin-nope'\n"
    names = [
        row["name"] for row in json.loads(ok(brokers, "topic", "list", "--format", "json").stdout)
    ]
    assert not {"admin-a", "admin-b", "admin-c"} & set(names)


def test_unknown_topic_is_one_line_and_not_auto_created(served: ServedBroker) -> None:
    brokers = served.bootstrap
    for args in (
        ("topic", "describe", "ghost"),
        ("topic", "consume", "ghost"),
        ("topic", "add-partitions", "ghost", "-n", "1"),
        ("topic", "alter-config", "ghost", "--set", "retention.ms=1"),
    ):
        result = run(brokers, *args)
        assert result.exit_code == 1, args
        assert result.stderr == "error: unknown topic 'ghost'\n", args
    produced = run(brokers, "topic", "produce", "ghost", input=b"x\n")
    assert produced.exit_code == 1
    assert produced.stderr == "error: unknown topic 'ghost'\n"
    # The broker auto-creates topics on metadata requests by name; none of the above did.
    names = [
        row["name"] for row in json.loads(ok(brokers, "topic", "list", "--format", "json").stdout)
    ]
    assert "ghost" not in names


def test_replication_factor_is_the_brokers_to_judge(served: ServedBroker, tmp_path: Path) -> None:
    refused = run(served.bootstrap, "topic", "create", "replicated", "-r", "3")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: cannot create topic 'replicated': ")
    assert "replication factor" in refused.stderr
    embedded = runner.invoke(
        app, ["topic", "create", "replicated", "-r", "2", "--data-dir", str(tmp_path / "d")]
    )
    assert embedded.exit_code == 2  # a usage error: a data directory has one copy


# --- produce and consume -----------------------------------------------------------------------


def test_produce_keyed_lands_where_kafka_puts_it(served: ServedBroker) -> None:
    brokers = served.bootstrap
    ok(brokers, "topic", "create", "keyed", "-p", "4")
    keys = [f"user-{index}" for index in range(40)]
    lines = b"".join(f"{key}:value-{index}\n".encode() for index, key in enumerate(keys))
    produced = ok(brokers, "topic", "produce", "keyed", "--key-separator", ":", input=lines)
    assert produced.stderr.startswith("produced 40 records to keyed in ")

    out = ok(brokers, "topic", "consume", "keyed", "-f", r"%p %o %k %v\n").stdout
    rows = [line.split() for line in out.splitlines()]
    assert len(rows) == 40
    for partition, _, key, _ in rows:
        assert int(partition) == partition_for_key(key.encode(), 4), key
    # Partition by partition, each in offset order, as with a data directory.
    assert [(int(p), int(o)) for p, o, _, _ in rows] == sorted(
        (int(p), int(o)) for p, o, _, _ in rows
    )
    assert sorted(value for _, _, _, value in rows) == sorted(f"value-{i}" for i in range(40))
    assert sum(high_watermarks(describe(brokers, "keyed"))) == 40

    fixed = ok(brokers, "topic", "produce", "keyed", "-k", "same", "-p", "3", input=b"a\nb")
    assert fixed.stderr.startswith("produced 2 records")
    tail = ok(brokers, "topic", "consume", "keyed", "-p", "3", "-o", "-2", "-f", r"%k=%v;")
    assert tail.stdout == "same=a;same=b;"

    missing = run(brokers, "topic", "produce", "keyed", "-p", "9", input=b"x\n")
    assert missing.exit_code == 1
    assert missing.stderr == "error: topic 'keyed' has no partition 9\n"


def test_consume_formats_counts_and_offsets(served: ServedBroker) -> None:
    brokers = served.bootstrap
    ok(brokers, "topic", "create", "events")
    values = b"".join(b"event-%d\n" % index for index in range(10))
    ok(brokers, "topic", "produce", "events", "-H", "source=test", "-z", "lz4", input=values)
    before = int(time.time() * 1000)
    time.sleep(0.05)
    ok(brokers, "topic", "produce", "events", "-k", "late", input=b"\xff\xfe\n")

    def consume(*args: str) -> str:
        return ok(brokers, "topic", "consume", "events", *args).stdout

    assert consume().splitlines()[:10] == [f"event-{index}" for index in range(10)]
    assert consume("-n", "3") == "event-0\nevent-1\nevent-2\n"
    assert consume("-o", "8", "-f", r"%o ") == "8 9 10 "
    assert consume("-o", "+9", "-f", r"%o ") == "9 10 "
    assert consume("-o", "-2", "-n", "1", "-f", r"%o ") == "9 "
    assert consume("-o", "end") == ""
    assert consume("-o", "99", "-f", r"%o ") == ""
    assert consume("-o", f"@{before}", "-f", r"%o %k ") == "10 late "
    assert consume("-n", "0") == ""

    records = [json.loads(line) for line in consume("-f", "json").splitlines()]
    assert len(records) == 11
    assert records[0]["topic"] == "events"
    assert records[0]["value"] == "event-0"
    assert records[0]["headers"] == [{"key": "source", "value": "test"}]
    assert records[10]["key"] == "late"
    assert records[10]["value_encoding"] == "base64"
    assert records[10]["timestamp"] >= before


def test_failed_deliveries_exit_1(served: ServedBroker) -> None:
    brokers = served.bootstrap
    ok(brokers, "topic", "create", "compacted", "-c", "cleanup.policy=compact")
    # A compacted topic refuses records without a key.
    result = run(brokers, "topic", "produce", "compacted", input=b"no key\n")
    assert result.exit_code == 1
    assert "delivery failed: compacted/0: " in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: produced 0 records to compacted")
    assert result.stderr.splitlines()[-1].endswith("; 1 failed")


# --- environment, real processes, errors -------------------------------------------------------


def test_env_and_real_processes(served: ServedBroker, tmp_path: Path) -> None:
    env = {"HEADWATER_BROKERS": served.bootstrap, "HEADWATER_DATA_DIR": str(tmp_path / "unused")}
    created = cli("topic", "create", "procs", "-p", "2", env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout == b"created topic procs (2 partitions)\n"
    produced = cli(
        "topic", "produce", "procs", "--key-separator", "=", input=b"a=1\nb=2\nc=3\n", env=env
    )
    assert produced.returncode == 0, produced.stderr
    assert produced.stderr.startswith(b"produced 3 records to procs in ")
    consumed = cli("topic", "consume", "procs", "-f", r"%k %p\n", env=env)
    assert consumed.returncode == 0, consumed.stderr
    placed = dict(line.split() for line in consumed.stdout.decode().splitlines())
    assert placed == {key: str(partition_for_key(key.encode(), 2)) for key in "abc"}
    # --brokers on the group, and precedence over --data-dir; the data dir is never made.
    listed = cli(
        "topic", "--brokers", served.bootstrap, "list", "--data-dir", str(tmp_path / "other")
    )
    assert listed.returncode == 0, listed.stderr
    assert b"procs" in listed.stdout
    assert not (tmp_path / "unused").exists() and not (tmp_path / "other").exists()

    piped = subprocess.run(
        f"{sys.executable} -m headwater topic consume procs | head -n 1",
        shell=True,
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert piped.stderr == b""
    assert len(piped.stdout.splitlines()) == 1


def test_unreachable_brokers_fail_fast_with_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = cli("topic", "list", "--brokers", address)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 15
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines  # librdkafka's own logging is silenced
    assert lines[0].startswith(f"error: cannot reach brokers {address}: ")
    assert result.stdout == b""

    env = {"HEADWATER_BROKERS": address}
    produced = cli("topic", "produce", "anything", input=b"x\n", env=env)
    assert produced.returncode == 1
    assert produced.stderr.decode().startswith(f"error: cannot reach brokers {address}: ")


def test_bad_broker_address_is_a_clear_error() -> None:
    result = run("localhost", "topic", "list")
    assert result.exit_code == 1
    assert result.stderr == "error: broker address 'localhost' is not HOST:PORT\n"


# --- Apache Kafka ------------------------------------------------------------------------------


def test_round_trip_against_apache_kafka(kafka_broker: object) -> None:
    brokers = kafka_broker.bootstrap  # type: ignore[attr-defined]
    topic = f"headwater-cli-{os.getpid()}"
    created = ok(brokers, "topic", "create", topic, "-p", "3", "-c", "retention.ms=600000")
    assert created.stdout == f"created topic {topic} (3 partitions)\n"
    assert (
        run(brokers, "topic", "create", topic).stderr == f"error: topic '{topic}' already exists\n"
    )

    keys = [f"k{index}" for index in range(30)]
    lines = b"".join(f"{key}\t{index}\n".encode() for index, key in enumerate(keys))
    ok(brokers, "topic", "produce", topic, "--key-separator", "\t", "-z", "zstd", input=lines)
    out = ok(brokers, "topic", "consume", topic, "-f", r"%p %k %v\n").stdout
    rows = [line.split() for line in out.splitlines()]
    assert len(rows) == 30
    for partition, key, _ in rows:
        assert int(partition) == partition_for_key(key.encode(), 3), key
    assert ok(brokers, "topic", "consume", topic, "-n", "5").stdout.count("\n") == 5

    details = describe(brokers, topic)
    assert sum(high_watermarks(details)) == 30
    assert configs(details)["retention.ms"] == ("600000", "override")
    assert configs(details)["cleanup.policy"][1] == "default"
    ok(brokers, "topic", "alter-config", topic, "-s", "retention.ms=700000")
    assert configs(describe(brokers, topic))["retention.ms"] == ("700000", "override")
    assert ok(brokers, "topic", "add-partitions", topic, "-n", "1").stdout.endswith("now 4\n")

    listed = json.loads(ok(brokers, "topic", "list", "--format", "json").stdout)
    assert any(row["name"] == topic and row["partitions"] == 4 for row in listed)
    assert ok(brokers, "topic", "delete", topic).stdout == f"deleted topic {topic}\n"
    missing = run(brokers, "topic", "delete", topic)
    assert missing.exit_code == 1
    assert missing.stderr == f"error: unknown topic '{topic}'\n"

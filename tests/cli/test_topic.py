"""`headwater topic ...` end to end: real data directories, the real log engine, real processes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from headwater.cli import app
from headwater.log.compression import Compression
from headwater.log.manager import CLEAN_SHUTDOWN_FILE, LogManager
from headwater.log.partitioner import partition_for_key
from headwater.log.record_batch import iter_batches

runner = CliRunner()


def run(data_dir: Path, *args: str, input: bytes | None = None) -> Result:
    return runner.invoke(app, [*args, "--data-dir", str(data_dir)], input=input)


def ok(data_dir: Path, *args: str, input: bytes | None = None) -> Result:
    result = run(data_dir, *args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


def cli(
    data_dir: Path, *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the real command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "headwater", *args, "--data-dir", str(data_dir)],
        input=input,
        capture_output=True,
        timeout=120,
        check=False,
    )


# --- topic administration --------------------------------------------------------------------


def test_create_list_describe_delete(tmp_path: Path) -> None:
    created = ok(tmp_path, "topic", "create", "orders", "-p", "3", "-c", "retention.ms=5000")
    assert created.stdout == "created topic orders (3 partitions)\n"
    assert ok(tmp_path, "topic", "create", "audit").stdout == "created topic audit (1 partition)\n"

    table = lines(ok(tmp_path, "topic", "list"))
    assert table[0].split() == ["NAME", "PARTITIONS", "CLEANUP-POLICY"]
    assert [row.split() for row in table[1:]] == [
        ["audit", "1", "delete"],
        ["orders", "3", "delete"],
    ]
    listed = json.loads(ok(tmp_path, "topic", "list", "--format", "json").stdout)
    assert [(topic["name"], topic["partitions"]) for topic in listed] == [
        ("audit", 1),
        ("orders", 3),
    ]

    ok(tmp_path, "topic", "produce", "orders", "-p", "1", input=b"a\nb\n")
    described = ok(tmp_path, "topic", "describe", "orders").stdout
    rows = [line.split() for line in described.splitlines()]
    assert ["PARTITIONS", "3"] in rows
    partitions = {row[0]: row for row in rows if len(row) == 4 and row[0].isdigit()}
    assert partitions["0"] == ["0", "0", "0", "0"]
    assert partitions["1"][:3] == ["1", "0", "2"]
    assert int(partitions["1"][3]) > 0
    assert ["retention.ms", "5000", "override"] in rows
    assert ["retention.bytes", "-1", "default"] in rows

    details = json.loads(ok(tmp_path, "topic", "describe", "orders", "--format", "json").stdout)
    assert [p["high_watermark"] for p in details["partitions"]] == [0, 2, 0]
    assert details["partitions"][1]["size_bytes"] > 0
    sources = {c["name"]: (c["value"], c["source"]) for c in details["configs"]}
    assert sources["retention.ms"] == ("5000", "override")
    assert sources["cleanup.policy"] == ("delete", "default")
    info_id = json.loads(ok(tmp_path, "topic", "list", "--format", "json").stdout)[1]["topic_id"]
    assert details["topic_id"] == info_id
    assert f"TOPIC-ID    {info_id}" in described

    deleted = ok(tmp_path, "topic", "delete", "orders", "audit")
    assert lines(deleted) == ["deleted topic orders", "deleted topic audit"]
    assert json.loads(ok(tmp_path, "topic", "list", "--format", "json").stdout) == []
    assert not (tmp_path / "orders-0").exists()


def test_create_existing_topic_is_one_clear_error(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t")
    result = run(tmp_path, "topic", "create", "t", "fresh")
    assert result.exit_code == 1
    assert result.stderr == "error: topic 't' already exists\n"
    assert "created topic fresh" in result.stdout  # the other names are still created
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("segment.bytes=12", "'segment.bytes'"),
        ("no.such.key=1", "'no.such.key'"),
        ("cleanup.policy=sometimes", "'cleanup.policy'"),
        ("retention.ms", "'retention.ms'"),  # no '='
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, config: str, named: str) -> None:
    result = run(tmp_path, "topic", "create", "t", "-c", config)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert named in result.stderr
    assert len(result.stderr.splitlines()) == 1
    if (tmp_path / "__headwater_meta").exists():
        assert json.loads(ok(tmp_path, "topic", "list", "--format", "json").stdout) == []


@pytest.mark.parametrize(
    "command",
    [
        ["topic", "describe", "nope"],
        ["topic", "delete", "nope"],
        ["topic", "consume", "nope"],
        ["topic", "produce", "nope"],
        ["topic", "alter-config", "nope", "--set", "retention.ms=1"],
        ["topic", "add-partitions", "nope", "--num", "1"],
        ["log", "verify", "nope"],
    ],
)
def test_unknown_topic_is_reported(tmp_path: Path, command: list[str]) -> None:
    ok(tmp_path, "topic", "create", "exists")
    result = run(tmp_path, *command, input=b"x\n")
    assert result.exit_code == 1
    assert result.stderr == "error: unknown topic 'nope'\n"
    # The manager was closed on the way out: the marker is written and the lock released.
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    ok(tmp_path, "topic", "list")


def test_unknown_partition_is_reported(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-p", "2")
    produced = run(tmp_path, "topic", "produce", "t", "-p", "2", input=b"x\n")
    assert produced.exit_code == 1
    assert "has no partition 2" in produced.stderr
    consumed = run(tmp_path, "topic", "consume", "t", "-p", "5")
    assert consumed.exit_code == 1
    assert "has no partition 5" in consumed.stderr


def test_missing_data_dir_is_not_created_by_reads(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    result = run(missing, "topic", "list")
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert not missing.exists()
    ok(missing, "topic", "create", "t")
    assert (missing / "t-0").is_dir()


def test_a_directory_that_is_not_a_data_dir_is_left_alone(tmp_path: Path) -> None:
    # The log manager removes `NAME-N` directories it has no topic for: never open a stranger's.
    precious = tmp_path / "photos-2019" / "beach.jpg"
    precious.parent.mkdir()
    precious.write_bytes(b"sand")
    for command in (["topic", "list"], ["topic", "create", "t"], ["log", "verify"]):
        result = run(tmp_path, *command)
        assert result.exit_code == 1
        assert "is not a Headwater data directory" in result.stderr
    assert precious.read_bytes() == b"sand"
    assert not (tmp_path / "__headwater_meta").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty, "topic", "list").exit_code == 1
    ok(empty, "topic", "create", "t")  # an empty directory may become one
    assert (empty / "t-0").is_dir()


def test_data_dir_from_environment_and_group_options(tmp_path: Path) -> None:
    from_env = runner.invoke(
        app, ["topic", "create", "via-env"], env={"HEADWATER_DATA_DIR": str(tmp_path / "env")}
    )
    assert from_env.exit_code == 0, from_env.output
    assert (tmp_path / "env" / "via-env-0").is_dir()
    root = runner.invoke(app, ["--data-dir", str(tmp_path / "root"), "topic", "create", "r"])
    assert root.exit_code == 0, root.output
    group = runner.invoke(app, ["topic", "--data-dir", str(tmp_path / "group"), "create", "g"])
    assert group.exit_code == 0, group.output
    assert (tmp_path / "root" / "r-0").is_dir()
    assert (tmp_path / "group" / "g-0").is_dir()
    # The command's own option wins over the environment.
    own = runner.invoke(
        app,
        ["topic", "list", "--data-dir", str(tmp_path / "root")],
        env={"HEADWATER_DATA_DIR": str(tmp_path / "env")},
    )
    assert [row.split()[0] for row in lines(own)[1:]] == ["r"]


def test_alter_config(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-c", "retention.ms=1000")
    ok(
        tmp_path,
        "topic",
        "alter-config",
        "t",
        "--set",
        "segment.bytes=4096",
        "--delete",
        "retention.ms",
    )
    configs = json.loads(ok(tmp_path, "topic", "describe", "t", "--format", "json").stdout)[
        "configs"
    ]
    sources = {c["name"]: (c["value"], c["source"]) for c in configs}
    assert sources["segment.bytes"] == ("4096", "override")
    assert sources["retention.ms"] == ("604800000", "default")

    bad = run(tmp_path, "topic", "alter-config", "t", "--set", "segment.bytes=1")
    assert bad.exit_code == 1
    assert "'segment.bytes'" in bad.stderr
    unchanged = json.loads(ok(tmp_path, "topic", "describe", "t", "--format", "json").stdout)
    assert {c["name"]: c["value"] for c in unchanged["configs"]}["segment.bytes"] == "4096"
    assert run(tmp_path, "topic", "alter-config", "t").exit_code == 2  # nothing to change


def test_add_partitions_adds_rather_than_sets_the_total(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-p", "3")
    result = ok(tmp_path, "topic", "add-partitions", "t", "--num", "2")
    assert result.stdout == "added 2 partitions to t: now 5\n"
    details = json.loads(ok(tmp_path, "topic", "describe", "t", "--format", "json").stdout)
    assert [p["partition"] for p in details["partitions"]] == [0, 1, 2, 3, 4]
    assert run(tmp_path, "topic", "add-partitions", "t", "--num", "0").exit_code == 2


# --- produce and consume -----------------------------------------------------------------------


def consume_rows(data_dir: Path, *args: str) -> list[list[str]]:
    result = ok(data_dir, "topic", "consume", *args)
    return [line.split("\t") for line in lines(result)]


def test_keyed_records_land_on_kafka_partitions_in_order(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-p", "4")
    sent = [(f"user-{i % 13}", f"event-{i}") for i in range(500)]
    data = "".join(f"{key}={value}\n" for key, value in sent).encode()
    produced = ok(tmp_path, "topic", "produce", "t", "--key-separator", "=", input=data)
    assert produced.stderr.startswith("produced 500 records to t")
    assert produced.stdout == ""

    rows = consume_rows(tmp_path, "t", "-f", r"%p\t%o\t%k\t%v\n")
    assert len(rows) == 500
    by_partition: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    for partition, offset, key, value in rows:
        assert int(partition) == partition_for_key(key.encode(), 4)
        by_partition[int(partition)].append((int(offset), key, value))
    assert len(by_partition) > 1
    expected = defaultdict(list)
    for key, value in sent:
        expected[partition_for_key(key.encode(), 4)].append((key, value))
    for partition, records in by_partition.items():
        assert [offset for offset, _, _ in records] == list(range(len(records)))
        assert [(key, value) for _, key, value in records] == expected[partition]


def test_fixed_key_and_fixed_partition(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-p", "4")
    ok(tmp_path, "topic", "produce", "t", "-k", "the-key", input=b"1\n2\n3\n")
    home = partition_for_key(b"the-key", 4)
    assert consume_rows(tmp_path, "t", "-f", r"%p\t%k\t%v\n") == [
        [str(home), "the-key", "1"],
        [str(home), "the-key", "2"],
        [str(home), "the-key", "3"],
    ]
    other = (home + 1) % 4
    ok(tmp_path, "topic", "produce", "t", "-p", str(other), "-k", "the-key", input=b"x\n")
    assert consume_rows(tmp_path, "t", "-p", str(other), "-f", r"%k\t%v\n") == [["the-key", "x"]]
    both = run(tmp_path, "topic", "produce", "t", "-k", "a", "--key-separator", ":", input=b"x\n")
    assert both.exit_code == 2


def test_key_separator_splits_at_the_first_separator_only(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t")
    ok(
        tmp_path,
        "topic",
        "produce",
        "t",
        "--key-separator",
        "::",
        input=b"k::v::w\nno-key\n::empty\n",
    )
    records = [
        json.loads(line) for line in lines(ok(tmp_path, "topic", "consume", "t", "-f", "json"))
    ]
    assert [(r["key"], r["value"]) for r in records] == [
        ("k", "v::w"),
        (None, "no-key"),
        ("", "empty"),
    ]


def test_keyless_records_stick_to_a_partition_per_batch(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-p", "3")
    data = b"".join(b"%d\n" % i for i in range(5000))
    ok(tmp_path, "topic", "produce", "t", input=data)
    rows = consume_rows(tmp_path, "t", "-f", r"%p\t%v\n")
    assert sorted(int(value) for _, value in rows) == list(range(5000))
    partition_of = {int(value): int(partition) for partition, value in rows}
    # A batch of 1,000 lines stays together; the next batch goes to another partition.
    for start in range(0, 5000, 1000):
        assert {partition_of[i] for i in range(start, start + 1000)} == {partition_of[start]}
        if start:
            assert partition_of[start] != partition_of[start - 1000]
    for partition in {int(p) for p, _ in rows}:
        values = [int(value) for p, value in rows if int(p) == partition]
        assert values == sorted(values)


def test_only_the_trailing_newline_is_removed(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t")
    ok(tmp_path, "topic", "produce", "t", input=b"a\r\n  b  \n\n\tlast")
    result = ok(tmp_path, "topic", "consume", "t", "-f", r"<%v>\n")
    assert result.stdout_bytes == b"<a\r>\n<  b  >\n<>\n<\tlast>\n"


def test_format_fields(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "events", "-p", "2")
    before = time.time_ns() // 1_000_000
    ok(
        tmp_path,
        "topic",
        "produce",
        "events",
        "-k",
        "key",
        "-p",
        "1",
        "-H",
        "trace=abc",
        "-H",
        "n=1",
        input=b"hello\nworld\n",
    )
    after = time.time_ns() // 1_000_000
    fmt = r"%t|%p|%o|%k|%v|%h|%H|%K|%V|%%|\x41\n"
    result = ok(tmp_path, "topic", "consume", "events", "-f", fmt)
    assert lines(result) == [
        "events|1|0|key|hello|trace=abc,n=1|2|3|5|%|A",
        "events|1|1|key|world|trace=abc,n=1|2|3|5|%|A",
    ]
    stamps = lines(ok(tmp_path, "topic", "consume", "events", "-f", r"%d %T\n"))
    for line in stamps:
        rpk_style, kcat_style = line.split()
        assert rpk_style == kcat_style
        assert before <= int(rpk_style) <= after


@pytest.mark.parametrize("fmt", ["%q", "trailing %", r"\xZZ"])
def test_bad_format_is_a_usage_error(tmp_path: Path, fmt: str) -> None:
    ok(tmp_path, "topic", "create", "t")
    result = run(tmp_path, "topic", "consume", "t", "-f", fmt)
    assert result.exit_code == 2
    assert "--format" in result.output


def test_json_format_is_lossless(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t")
    ok(tmp_path, "topic", "produce", "t", "-H", "h=v", input=b"plain text\n\xff\xfe binary\n")
    ok(tmp_path, "topic", "produce", "t", "-k", "caf\xe9", input="\u00e9t\u00e9\n".encode())
    records = [
        json.loads(line) for line in lines(ok(tmp_path, "topic", "consume", "t", "-f", "json"))
    ]
    assert records[0] == {
        "topic": "t",
        "partition": 0,
        "offset": 0,
        "timestamp": records[0]["timestamp"],
        "key": None,
        "value": "plain text",
        "headers": [{"key": "h", "value": "v"}],
    }
    assert records[1]["value_encoding"] == "base64"
    assert base64.b64decode(records[1]["value"]) == b"\xff\xfe binary"
    assert records[1]["offset"] == 1
    assert (records[2]["key"], records[2]["value"], records[2]["headers"]) == (
        "caf\xe9",
        "\xe9t\xe9",
        [],
    )
    assert "key_encoding" not in records[2]


def test_num_stops_after_that_many_records_in_total(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-p", "2")
    ok(tmp_path, "topic", "produce", "t", "-p", "0", input=b"a\nb\n")
    ok(tmp_path, "topic", "produce", "t", "-p", "1", input=b"c\nd\n")
    assert lines(ok(tmp_path, "topic", "consume", "t", "-n", "3")) == ["a", "b", "c"]
    assert lines(ok(tmp_path, "topic", "consume", "t", "-n", "1", "-p", "1")) == ["c"]
    assert ok(tmp_path, "topic", "consume", "t", "-n", "0").stdout == ""
    assert lines(ok(tmp_path, "topic", "consume", "t", "-n", "99")) == ["a", "b", "c", "d"]


def test_offsets(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t")
    ok(tmp_path, "topic", "produce", "t", input=b"".join(b"v%d\n" % i for i in range(10)))

    def values(*args: str) -> list[str]:
        return lines(ok(tmp_path, "topic", "consume", "t", *args))

    everything = [f"v{i}" for i in range(10)]
    assert values() == everything
    assert values("--from-beginning") == everything
    assert values("--offset", "start") == everything
    assert values("--offset", "7") == ["v7", "v8", "v9"]
    assert values("-o", "7", "-n", "1") == ["v7"]
    assert values("-o", "+8") == ["v8", "v9"]
    assert values("-o", "-2") == ["v8", "v9"]
    assert values("-o", "end") == []
    assert values("-o", "99") == []
    assert values("-o", "@0") == everything
    assert run(tmp_path, "topic", "consume", "t", "-o", "soon").exit_code == 2
    both = run(tmp_path, "topic", "consume", "t", "-o", "3", "--from-beginning")
    assert both.exit_code == 2


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_compression_round_trip(tmp_path: Path, codec: str) -> None:
    ok(tmp_path, "topic", "create", "t")
    sent = [b"record %d " % i + b"x" * (i % 50) for i in range(300)]
    ok(tmp_path, "topic", "produce", "t", "-z", codec, input=b"\n".join(sent) + b"\n")
    assert ok(tmp_path, "topic", "consume", "t").stdout_bytes.split(b"\n")[:-1] == sent
    # The batch on disk really carries the codec.
    data = next((tmp_path / "t-0").glob("*.log")).read_bytes()
    codecs = {header.compression for _, header in iter_batches(data)}
    assert codecs == {Compression[codec.upper()]}


def test_batches_stay_under_max_message_bytes(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-c", "max.message.bytes=2000")
    line = b"y" * 100 + b"\n"
    produced = ok(tmp_path, "topic", "produce", "t", input=line * 200)
    assert "produced 200 records" in produced.stderr
    too_big = run(tmp_path, "topic", "produce", "t", input=line * 3 + b"z" * 5000 + b"\n")
    assert too_big.exit_code == 1
    assert too_big.stderr.startswith("error: ")
    assert "max.message.bytes" in too_big.stderr
    assert "Traceback" not in too_big.output


# --- real processes ----------------------------------------------------------------------------


def test_produce_from_a_pipe_then_consume(tmp_path: Path) -> None:
    created = cli(tmp_path, "topic", "create", "piped", "-p", "2")
    assert created.returncode == 0, created.stderr
    data = b"".join(b"k%d:line %d\n" % (i % 7, i) for i in range(2000))
    produced = cli(tmp_path, "topic", "produce", "piped", "--key-separator", ":", input=data)
    assert produced.returncode == 0, produced.stderr
    assert produced.stderr.startswith(b"produced 2000 records to piped")
    assert b"\x1b" not in produced.stderr  # no progress display when stderr is not a terminal
    consumed = cli(tmp_path, "topic", "consume", "piped", "-f", r"%k:%v\n")
    assert consumed.returncode == 0, consumed.stderr
    got = consumed.stdout.splitlines(keepends=True)
    assert sorted(got) == sorted(data.splitlines(keepends=True))
    for key in range(7):  # one key lives on one partition, so its records keep their order
        mine = [line for line in got if line.startswith(b"k%d:" % key)]
        assert mine == [
            line for line in data.splitlines(keepends=True) if line.startswith(b"k%d:" % key)
        ]


def test_locked_data_dir_names_the_holder(tmp_path: Path) -> None:
    manager = LogManager(str(tmp_path), owner="the test's own manager")
    try:
        result = cli(tmp_path, "topic", "list")
    finally:
        manager.close()
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.startswith("error: ")
    assert f"pid {os.getpid()}" in stderr
    assert "the test's own manager" in stderr
    assert "Traceback" not in stderr
    assert cli(tmp_path, "topic", "list").returncode == 0  # free again once released


def test_broken_pipe_exits_quietly(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t")
    ok(tmp_path, "topic", "produce", "t", input=b"".join(b"value %d\n" % i for i in range(100_000)))
    process = subprocess.Popen(
        [sys.executable, "-m", "headwater", "topic", "consume", "t", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"value 0\n"
    process.stdout.close()  # like `| head -1`
    _, stderr = process.communicate(timeout=120)
    assert stderr == b""
    assert process.returncode == 0
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()


def test_python_dash_m_headwater_shows_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "headwater", "topic", "--help"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0
    for command in ("create", "list", "describe", "delete", "produce", "consume", "add-partitions"):
        assert command.encode() in result.stdout

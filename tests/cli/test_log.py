"""`headwater log verify`: the scrub finds what recovery never re-reads."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from headwater.cli import app
from headwater.log.record_batch import BATCH_HEADER_SIZE, iter_batches

runner = CliRunner()


def run(data_dir: Path, *args: str, input: bytes | None = None) -> Result:
    return runner.invoke(app, [*args, "--data-dir", str(data_dir)], input=input)


def ok(data_dir: Path, *args: str, input: bytes | None = None) -> Result:
    result = run(data_dir, *args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def test_clean_logs_verify(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "a", "-p", "2")
    ok(tmp_path, "topic", "create", "b", "-c", "segment.bytes=1024")
    ok(tmp_path, "topic", "produce", "a", input=b"".join(b"%d\n" % i for i in range(3000)))
    for round_ in range(5):
        ok(tmp_path, "topic", "produce", "b", input=b"round %d " % round_ + b"z" * 300 + b"\n")
    assert len(list((tmp_path / "b-0").glob("*.log"))) > 1

    result = ok(tmp_path, "log", "verify")
    size = sum(path.stat().st_size for path in tmp_path.glob("*-*/*.log"))
    assert result.stdout.splitlines()[-1].startswith(f"verified 3 partitions, {size} bytes")
    assert result.stdout.rstrip().endswith("no problems")
    assert result.stderr == ""  # no progress display when stderr is not a terminal

    only_b = ok(tmp_path, "log", "verify", "b")
    assert only_b.stdout.startswith("verified 1 partition, ")


def test_empty_data_dir_verifies(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "empty")
    assert (
        ok(tmp_path, "log", "verify").stdout == "verified 1 partition, 0 bytes (0 B), no problems\n"
    )


def test_flipped_byte_in_a_closed_segment_is_found(tmp_path: Path) -> None:
    ok(tmp_path, "topic", "create", "t", "-c", "segment.bytes=1024")
    # Several small produces make several batches, so the first segment holds more than one.
    for round_ in range(12):
        lines = b"".join(b"round %d line %d\n" % (round_, i) for i in range(4))
        ok(tmp_path, "topic", "produce", "t", input=lines)
    segments = sorted((tmp_path / "t-0").glob("*.log"))
    assert len(segments) > 1  # the first one is closed
    first = segments[0]
    data = bytearray(first.read_bytes())
    batches = list(iter_batches(data))
    assert len(batches) > 1
    # Flip a byte in the records of the batch in the middle of the file.
    middle = len(data) // 2
    position, header = next(
        (position, header)
        for position, header in batches
        if position <= middle < position + header.size_bytes
    )
    body = position + BATCH_HEADER_SIZE
    target = body + (position + header.size_bytes - body) // 2
    data[target] ^= 0x40
    first.write_bytes(bytes(data))

    result = run(tmp_path, "log", "verify")
    assert result.exit_code == 1
    problems = result.stdout.splitlines()
    assert len(problems) == 1
    assert f"topic 't' partition 0 offset {header.base_offset}" in problems[0]
    assert "CRC" in problems[0]
    assert "1 problem" in result.stderr

    # Reading the damaged batch is an error line too, never a traceback or bad data.
    consumed = run(tmp_path, "topic", "consume", "t")
    assert consumed.exit_code == 1
    assert consumed.stderr.startswith("error: ")
    assert f"offset {header.base_offset}" in consumed.stderr
    assert "Traceback" not in consumed.output

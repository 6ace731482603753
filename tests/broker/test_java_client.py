"""The official Java client (kafka-clients 4.1) against Headwater, differential with real Kafka.

`java/HeadwaterJavaClient.java` is compiled once per session with `javac` against the Kafka jars
that `scripts/fetch-kafka.sh` caches (found the way `kafka_fixture.default_libs_dir` finds them).
It creates a 3-partition topic with the AdminClient, produces keyed records with headers (acks=all,
no idempotence, lz4), reads them back with an assign()-consumer (no group), and prints what it
observed. The test runs it against real Kafka and against Headwater and compares.

Missing `javac` or jars fail the test with a how-to-fix message; they never skip it.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from headwater.log.partitioner import partition_for_key
from kafka_fixture import FETCH_HINT, default_libs_dir

pytestmark = pytest.mark.timeout(300)

SOURCE = Path(__file__).resolve().parent / "java" / "HeadwaterJavaClient.java"
MAIN_CLASS = "HeadwaterJavaClient"
PARTITIONS = 3
COUNT = 200
RUN_TIMEOUT = 120.0
JVM_FLAGS = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.net.preferIPv4Stack=true",
    # No log4j2 config on the classpath: the default configuration, at WARN, logs to stderr.
    "-Dorg.apache.logging.log4j.level=WARN",
)


@dataclass(frozen=True)
class JavaClient:
    classes: Path
    libs: Path

    def command(self, bootstrap: str, topic: str, count: int) -> list[str]:
        classpath = f"{self.classes}:{self.libs}/*"
        return ["java", *JVM_FLAGS, "-cp", classpath, MAIN_CLASS, bootstrap, topic, str(count)]


@dataclass
class Observed:
    """What one run of the Java client printed, parsed."""

    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (partition, offset)
    consumed: list[tuple[int, int, str, str, str]] = field(default_factory=list)
    beginning: dict[int, int] = field(default_factory=dict)
    end: dict[int, int] = field(default_factory=dict)
    by_time: dict[int, tuple[int, int]] = field(default_factory=dict)  # offset, ts - base
    done: bool = False

    def acked_offsets(self) -> dict[int, list[int]]:
        offsets: dict[int, list[int]] = {}
        for partition, offset in self.acked.values():
            offsets.setdefault(partition, []).append(offset)
        return {partition: sorted(found) for partition, found in sorted(offsets.items())}

    def acked_by_partition(self) -> dict[int, list[tuple[int, str]]]:
        """partition -> [(offset, key)] in offset order: the full placement of every record."""
        placed: dict[int, list[tuple[int, str]]] = {}
        for key, (partition, offset) in self.acked.items():
            placed.setdefault(partition, []).append((offset, key))
        return {partition: sorted(found) for partition, found in sorted(placed.items())}


def parse(stdout: str) -> Observed:
    seen = Observed()
    for line in stdout.splitlines():
        kind, *fields = line.split()
        if kind == "P":
            partition, offset, key = fields
            assert key not in seen.acked, f"{key} acknowledged twice"
            seen.acked[key] = (int(partition), int(offset))
        elif kind == "C":
            partition, offset, key, value, header = fields
            seen.consumed.append((int(partition), int(offset), key, value, header))
        elif kind == "B":
            seen.beginning[int(fields[0])] = int(fields[1])
        elif kind == "E":
            seen.end[int(fields[0])] = int(fields[1])
        elif kind == "T":
            seen.by_time[int(fields[0])] = (int(fields[1]), int(fields[2]))
        elif kind == "DONE":
            seen.done = True
        else:
            raise AssertionError(f"unexpected output line from the Java client: {line!r}")
    return seen


@pytest.fixture(scope="session")
def java_client(tmp_path_factory: pytest.TempPathFactory) -> JavaClient:
    """`HeadwaterJavaClient` compiled once per session against the cached kafka-clients jar."""
    libs = default_libs_dir()
    if not any(libs.glob("kafka-clients-*.jar")):
        pytest.fail(f"no kafka-clients jar in {libs}: {FETCH_HINT}", pytrace=False)
    for tool in ("javac", "java"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` (JDK 17+) is not on PATH; the Java client test needs it")
    classes = tmp_path_factory.mktemp("java-client")
    result = subprocess.run(
        ["javac", "-cp", f"{libs}/*", "-d", str(classes), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"javac failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return JavaClient(classes, libs)


def run_client(client: JavaClient, bootstrap: str, label: str) -> Observed:
    topic = f"java-{label}-{uuid.uuid4().hex[:8]}"
    try:
        result = subprocess.run(
            client.command(bootstrap, topic, COUNT),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"the Java client against {label} timed out after {RUN_TIMEOUT:.0f} s\n"
            f"stdout tail:\n{_tail(error.stdout)}\nstderr tail:\n{_tail(error.stderr)}"
        ) from None
    assert result.returncode == 0, (
        f"the Java client against {label} exited with {result.returncode}\n"
        f"stdout tail:\n{_tail(result.stdout)}\nstderr tail:\n{_tail(result.stderr)}"
    )
    observed = parse(result.stdout)
    check_self_consistent(observed, label)
    return observed


def _tail(text: str | bytes | None, limit: int = 6000) -> str:
    if text is None:
        return "(none)"
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-limit:]


def check_self_consistent(seen: Observed, label: str) -> None:
    """Every record acknowledged once and read back intact; offsets dense from 0 per partition."""
    assert seen.done, f"{label}: the Java client did not finish"
    keys = [f"key-{i}" for i in range(COUNT)]
    assert sorted(seen.acked) == sorted(keys), f"{label}: not every record was acknowledged"

    # Offsets per partition are contiguous from 0, as acknowledged and as consumed.
    for partition, offsets in seen.acked_offsets().items():
        assert offsets == list(range(len(offsets))), f"{label}: p{partition} acked {offsets}"
    consumed_offsets: dict[int, list[int]] = {}
    for partition, offset, *_ in seen.consumed:
        consumed_offsets.setdefault(partition, []).append(offset)
    for partition, offsets in consumed_offsets.items():
        assert offsets == list(range(len(offsets))), f"{label}: p{partition} consumed {offsets}"

    # Every record came back once, where it was acknowledged, with its value and header.
    assert len(seen.consumed) == COUNT, f"{label}: consumed {len(seen.consumed)} of {COUNT}"
    for partition, offset, key, value, header in seen.consumed:
        i = int(key.removeprefix("key-"))
        assert seen.acked[key] == (partition, offset), (
            f"{label}: {key} read at p{partition}@{offset}"
        )
        assert (value, header) == (f"value-{i}", f"hv-{i}"), f"{label}: {key} read back wrong"

    # Key placement is Java's default partitioner (murmur2), which Headwater reimplements.
    for key, (partition, _) in seen.acked.items():
        expected = partition_for_key(key.encode(), PARTITIONS)
        assert partition == expected, f"{label}: {key} in p{partition}, murmur2 says p{expected}"

    sizes = {partition: len(offsets) for partition, offsets in seen.acked_offsets().items()}
    assert seen.beginning == dict.fromkeys(range(PARTITIONS), 0), f"{label}: {seen.beginning}"
    assert seen.end == {p: sizes.get(p, 0) for p in range(PARTITIONS)}, f"{label}: {seen.end}"
    assert set(seen.by_time) == set(range(PARTITIONS)), f"{label}: {seen.by_time}"


@pytest.fixture(scope="module")
def kafka_observed(java_client: JavaClient, kafka_broker: Any) -> Observed:
    return run_client(java_client, kafka_broker.bootstrap, "kafka")


def test_java_client_against_kafka(kafka_observed: Observed) -> None:
    """The reference run: the scenario and its parsing hold on a real Kafka broker."""
    assert len(kafka_observed.acked) == COUNT


def test_java_client_against_headwater(
    java_client: JavaClient, shared_headwater: Any, kafka_observed: Observed
) -> None:
    ours = run_client(java_client, shared_headwater.bootstrap, "headwater")
    kafka = kafka_observed
    # Same key -> partition mapping, and the same offset for every record (fresh topic on each).
    assert ours.acked == kafka.acked
    assert ours.acked_by_partition() == kafka.acked_by_partition()
    assert ours.acked_offsets() == kafka.acked_offsets()
    assert ours.beginning == kafka.beginning
    assert ours.end == kafka.end
    assert ours.by_time == kafka.by_time
    assert sorted(ours.consumed) == sorted(kafka.consumed)

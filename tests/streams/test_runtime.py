"""The streams runtime over real topics: embedded, a `headwater serve` broker, Apache Kafka.

Every test compares with the `TestDriver` on the same input: the runtime must compute what the
in-memory driver computes, across restarts, crashes (SIGKILLed worker processes) and commits
cut short. Windowed results are final emissions read back from the output topic; at least once
may emit a window twice, always with the same value, which is asserted too.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import runtime_worker
from broker_process import ServedBroker, start_broker

import headwater
from headwater.client import OFFSET_BEGINNING, Client, TopicPartition
from headwater.errors import ClientError, ConfigError, DeserializationError
from headwater.streams import (
    App,
    CoPartitioningError,
    InternalTopicError,
    MissingSourceTopicError,
    Runner,
    RuntimeConfig,
    Tumbling,
)
from headwater.streams._runtime import CHECKPOINT_KEY, _feed
from headwater.streams.testing import TestDriver

pytestmark = pytest.mark.timeout(180)

WORKER = Path(runtime_worker.__file__)
# Event times start an hour ago (brokers delete records older than the retention, 7 days, and
# Kafka 4 refuses timestamps more than an hour ahead), on a window boundary.
BASE_TS = (time.time_ns() // 1_000_000 - 3_600_000) // 60_000 * 60_000
END_TS = BASE_TS + 600_000  # past every event: closes every window of the real input
SETTLE_S = 60.0  # seconds to wait for results, a group or a commit
Event = tuple[str, int, int]
Result = dict[tuple[str, int], int]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_events(count: int, keys: int = 10, seed: int = 3) -> list[Event]:
    """(key, value, timestamp), 7 ms apart: about 140 events per 1-second window."""
    rng = random.Random(seed)
    return [(f"k{rng.randrange(keys)}", rng.randrange(100), BASE_TS + i * 7) for i in range(count)]


def expected(app: App, source: str, sink: str, events: list[Event], partitions: int) -> Result:
    """What the `TestDriver` emits for `events` and one end marker per partition."""
    driver = TestDriver(app, {source: partitions})
    for key, value, ts in events:
        driver.send(source, key, value, ts)
    for partition in range(partitions):
        driver.send(source, "end", 0, END_TS, partition=partition)
    out: Result = {}
    for record in driver.output(sink):
        slot = (record.value.key, record.value.window.start)
        assert slot not in out, "the driver emits each window once"
        out[slot] = record.value.value
    return out


def produce(client: Client, topic: str, events: list[Event]) -> None:
    with client.producer(key_serializer="str", value_serializer="json") as producer:
        for key, value, ts in events:
            producer.send(topic, value, key, timestamp=ts)
        producer.flush()


def produce_end(client: Client, topic: str, partitions: int) -> None:
    with client.producer(key_serializer="str", value_serializer="json") as producer:
        for partition in range(partitions):
            producer.send(topic, 0, "end", partition=partition, timestamp=END_TS)
        producer.flush()


def read_all(client: Client, topic: str, partitions: int = 1) -> list[Any]:
    """Every record of `topic` now, values JSON-decoded."""
    records: list[Any] = []
    with client.consumer(key_deserializer="str", value_deserializer="json") as consumer:
        chosen = [TopicPartition(topic, p) for p in range(partitions)]
        ends = {tp: consumer.watermarks(tp)[1] for tp in chosen}
        consumer.assign(dict.fromkeys(chosen, OFFSET_BEGINNING))
        deadline = time.monotonic() + SETTLE_S
        while any(consumer.position([tp])[tp] < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            records.extend(consumer.poll_batch(timeout=0.2))
    return records


def results(client: Client, topic: str) -> tuple[Result, list[tuple[tuple[str, int], int]]]:
    """(the last value per (key, window start), every emission in order)."""
    emitted = [((r.value[0], r.value[1][0]), r.value[2]) for r in read_all(client, topic)]
    return dict(emitted), emitted


def assert_same_results(client: Client, topic: str, want: Result) -> None:
    got, emitted = results(client, topic)
    assert got == want
    wrong = [(slot, value) for slot, value in emitted if want.get(slot) != value]
    assert not wrong, f"windows emitted with a value other than the final one: {wrong[:5]}"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# --- embedded -----------------------------------------------------------------------------------


def test_embedded_results_survive_a_restart(tmp_path: Path) -> None:
    """Topic to topic on the embedded backend equals the TestDriver; closing the runner and the
    client mid-stream and starting over restores the open windows from the changelog."""
    url = f"file://{tmp_path / 'data'}"
    app = runtime_worker.build_app("restart", "input", "output")
    events = make_events(3_000)
    first, second = events[:1_300], events[1_300:]
    client = headwater.connect(url)
    client.admin().create_topic("input", 3)
    client.admin().create_topic("output", 1)
    produce(client, "input", first)
    runner = Runner(app, client, commit_interval_ms=100)
    assert runner.run_until(lambda r: r.metrics()["records-consumed"] >= len(first), timeout=30)
    assert runner.assigned_tasks() == [(0, 0), (0, 1), (0, 2)]
    runner.close()
    emitted_before = len(results(client, "output")[1])
    assert emitted_before > 0
    client.close()

    client = headwater.connect(url)
    produce(client, "input", second)
    produce_end(client, "input", 3)
    runner = Runner(runtime_worker.build_app("restart", "input", "output"), client)
    assert runner.run_until(
        lambda r: r.metrics()["records-consumed"] >= len(second) + 3, timeout=30
    )
    metrics = runner.metrics()
    runner.close()
    assert metrics["restored-records"] > 0  # the open windows came from the changelog
    assert metrics["records-consumed"] == len(second) + 3  # resumed at the committed offsets
    assert_same_results(client, "output", expected(app, "input", "output", events, 3))
    client.close()


def test_a_commit_cut_short_is_not_applied_and_is_repaired(tmp_path: Path) -> None:
    """Changelog entries written after the last checkpoint (a crash between writing the
    entries and the checkpoint) are not restored; the restoring task rewrites those keys with
    their committed values and checkpoints again, and the results stay exact."""
    app = runtime_worker.build_app("cut", "input", "output")
    events = make_events(1_000)
    client = headwater.connect(tmp_path / "data")
    client.admin().create_topic("input", 1)
    client.admin().create_topic("output", 1)
    produce(client, "input", events[:500])
    with Runner(app, client) as runner:
        assert runner.run_until(lambda r: r.metrics()["records-consumed"] >= 500, timeout=30)
    open_window = (events[499][0], events[499][2] - events[499][2] % 1_000)
    codec = app.codec
    changelog = "cut-sums-changelog"
    with client.producer() as producer:  # what a crashed commit leaves: an entry, no checkpoint
        producer.send(changelog, codec.encode(1_000_000), codec.encode(open_window), partition=0)
    produce(client, "input", events[500:])
    produce_end(client, "input", 1)
    with Runner(app, client) as runner:
        assert runner.run_until(lambda r: r.metrics()["records-consumed"] >= 501, timeout=30)
    assert_same_results(client, "output", expected(app, "input", "output", events, 1))
    tail = read_all_raw(client, changelog)
    repaired = [r for r in tail if r.key == codec.encode(open_window)]
    assert codec.decode(repaired[-1].value) != 1_000_000  # rewritten with the committed value
    assert any(r.key == CHECKPOINT_KEY for r in tail[-3:])
    client.close()


def test_positions_come_from_the_checkpoint_not_the_committed_offsets(tmp_path: Path) -> None:
    """The group's committed offsets may lag the checkpoint (a crash between writing the
    checkpoint and committing): a restored task resumes where its state is, not before it, so
    no record is counted twice."""
    app = runtime_worker.build_app("lag", "input", "output")
    events = make_events(1_000)
    client = headwater.connect(tmp_path / "data")
    client.admin().create_topic("input", 1)
    client.admin().create_topic("output", 1)
    produce(client, "input", events[:600])
    with Runner(app, client) as runner:
        assert runner.run_until(lambda r: r.metrics()["records-consumed"] >= 600, timeout=30)
    tp = TopicPartition("input", 0)
    assert client.admin().list_group_offsets("lag") == {tp: 600}
    client.admin().alter_group_offsets("lag", {tp: 100})  # as if the last commits were lost
    produce(client, "input", events[600:])
    produce_end(client, "input", 1)
    with Runner(app, client) as runner:
        assert runner.run_until(lambda r: r.metrics()["records-consumed"] >= 401, timeout=30)
        assert runner.metrics()["records-consumed"] == 401  # from the checkpoint's 600
    assert_same_results(client, "output", expected(app, "input", "output", events, 1))
    client.close()


def test_start_stop_and_app_run(tmp_path: Path) -> None:
    """`start`/`stop` run on a thread of the runner's; `app.run` blocks until its event."""
    client = headwater.connect(tmp_path / "data")
    client.admin().create_topic("input", 2)
    client.admin().create_topic("output", 1)
    events = make_events(500)
    produce(client, "input", events)
    produce_end(client, "input", 2)
    app = runtime_worker.build_app("threads", "input", "output")
    want = expected(app, "input", "output", events, 2)
    runner = Runner(app, client, commit_interval_ms=50)
    runner.start()
    wait_until(lambda: runner.metrics()["records-consumed"] == len(events) + 2, "processing")
    runner.stop()
    assert not runner.running
    assert_same_results(client, "output", want)

    stop = threading.Event()
    again = runtime_worker.build_app("threads-2", "input", "output-2")
    client.admin().create_topic("output-2", 1)
    thread = threading.Thread(target=again.run, args=(client,), kwargs={"stop": stop})
    thread.start()
    wait_until(lambda: len(results(client, "output-2")[0]) == len(want), "app.run's results")
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert_same_results(client, "output-2", want)
    committed = client.admin().list_group_offsets("threads-2")
    assert sum(committed.values()) == len(events) + 2  # stopping committed
    client.close()


def test_config() -> None:
    app = runtime_worker.build_app("config", "input", "output")
    config = RuntimeConfig.parse(
        "config",
        {"commit.interval.ms": "250", "consumer.session.timeout.ms": 6_000, "acks": "all"},
        {"main_consumer_group_instance_id": "one", "client_id": "me"},
    )
    assert config.commit_interval_ms == 250
    assert config.consumer == {
        "session.timeout.ms": 6_000,
        "group.instance.id": "one",
        "client.id": "me",
    }
    assert config.restore == {"session.timeout.ms": 6_000, "client.id": "me"}
    assert config.producer == {"acks": "all", "client.id": "me"}
    assert config.dead_letter_topic == "config-dlq"
    for bad, message in (
        ({"group.id": "x"}, "set by the runtime"),
        ({"consumer.enable.auto.commit": True}, "set by the runtime"),
        ({"processing.guarantee": "exactly_once_v2"}, "not supported yet"),
        ({"num.stream.threads": 2}, "more processes"),
        ({"application.id": "other"}, "'config'"),
        ({"commit.interval.ms": 0}, "at least 1"),
        ({"no.such.key": 1}, "unknown streams config"),
        ({"session.timeout.ms": "soon"}, "integer"),
        ({"default.deserialization.exception.handler": "ignore"}, "dead-letter"),
    ):
        with pytest.raises(ConfigError, match=message):
            Runner(app, "file:///unused", bad)


def read_all_raw(client: Client, topic: str) -> list[Any]:
    with client.consumer() as consumer:
        tp = TopicPartition(topic, 0)
        end = consumer.watermarks(tp)[1]
        consumer.assign({tp: OFFSET_BEGINNING})
        out: list[Any] = []
        while consumer.position([tp])[tp] < end:
            out.extend(consumer.poll_batch(timeout=0.2))
    return out


def test_bad_records_go_to_the_dead_letter_topic_or_fail(tmp_path: Path) -> None:
    client = headwater.connect(tmp_path / "data")
    client.admin().create_topic("input", 1)
    with client.producer() as producer:
        producer.send("input", b'{"ok": 1}', b"a", timestamp=BASE_TS + 1)
        producer.send("input", b"not json", b"b", timestamp=BASE_TS + 2)
        producer.send("input", b'{"ok": 3}', b"c", timestamp=BASE_TS + 3)
        producer.flush()

    def app(application_id: str) -> App:
        built = App(application_id)
        built.stream("input", key="str", value="json").map_values(lambda v: v["ok"]).to(
            "out", key="str", value="json"
        )
        return built

    runner = Runner(app("dlq"), client, default_deserialization_exception_handler="dead-letter")
    assert runner.run_until(lambda r: r.metrics()["records-consumed"] >= 3, timeout=30)
    runner.close()
    assert runner.metrics()["dead-letter-records"] == 1
    assert [(r.key, r.value) for r in read_all(client, "out")] == [("a", 1), ("c", 3)]
    [dead] = read_all_raw(client, "dlq-dlq")
    assert (dead.key, dead.value) == (b"b", b"not json")
    assert dict(dead.headers)["headwater.dlq.offset"] == b"1"

    failing = Runner(app("strict"), client)
    with pytest.raises(DeserializationError) as caught:
        failing.run_until(timeout=30)
    failing.close()
    assert (caught.value.topic, caught.value.partition, caught.value.offset) == ("input", 0, 1)
    with client.consumer(group_id="strict") as consumer:  # nothing committed past the failure
        assert consumer.committed([TopicPartition("input", 0)])[TopicPartition("input", 0)] in (
            None,
            0,
        )
    client.close()


def test_topic_setup(tmp_path: Path) -> None:
    """Internal topics are created with their counts and cleanup policies; a missing input,
    inputs that are not co-partitioned and a mismatched internal topic are refused."""
    client = headwater.connect(tmp_path / "data")
    admin = client.admin()
    app = App("setup")
    by_word = app.stream("words", key="str", value="str").key_by(
        lambda k, v: v, name="by-word", partitions=2
    )
    by_word.window(Tumbling(1_000, grace_ms=500), name="counts").count().to("counts")
    by_word.group(name="totals").count()
    with pytest.raises(MissingSourceTopicError, match="words"):
        Runner(app, client).run_until(timeout=1)
    admin.create_topic("words", 3)
    runner = Runner(app, client)
    runner.run_until(timeout=0.5)
    runner.close()
    assert admin.describe_topic("setup-by-word-repartition").partitions.__len__() == 2
    windowed = admin.describe_configs("setup-counts-changelog")
    assert windowed["cleanup.policy"] == "compact,delete"
    assert windowed["retention.ms"] == str(1_500 + 86_400_000)
    assert admin.describe_configs("setup-totals-changelog")["cleanup.policy"] == "compact"
    assert len(admin.describe_topic("setup-totals-changelog").partitions) == 2

    joined = App("copart")
    table = joined.table("users", key="str", value="str")
    joined.stream("clicks", key="str", value="str").join(table, lambda c, u: (c, u)).to("o")
    admin.create_topic("users", 2)
    admin.create_topic("clicks", 3)
    with pytest.raises(CoPartitioningError, match="clicks"):
        Runner(joined, client).run_until(timeout=1)

    admin.delete_topics(["setup-by-word-repartition"])
    admin.create_topic("setup-by-word-repartition", 5)
    with pytest.raises(InternalTopicError, match="setup-by-word-repartition"):
        Runner(app, client).run_until(timeout=1)
    client.close()


def test_repartition_and_join_match_the_driver(tmp_path: Path) -> None:
    """Re-keyed records go through a repartition topic to the partition of the same key in a
    table topic written with a "str" key serializer, as the TestDriver routes them."""

    def build() -> App:
        app = App("enrich")
        users = app.table("users", key="str", value="str", name="users")
        (
            app.stream("clicks", key="str", value="json")
            .key_by(lambda _, click: click["user"], name="by-user")
            .join(users, lambda click, country: [click["page"], country], how="left")
            .to("enriched", key="str", value="json")
        )
        return app

    client = headwater.connect(tmp_path / "data")
    for topic, count in (("users", 3), ("clicks", 2), ("enriched", 1)):
        client.admin().create_topic(topic, count)
    users = [(f"u{i}", ["fr", "nl", "jp"][i % 3], BASE_TS + i) for i in range(20)]
    rng = random.Random(5)
    clicks = [
        (f"s{i}", {"user": f"u{rng.randrange(25)}", "page": i}, BASE_TS + 1_000 + i)
        for i in range(300)
    ]
    driver = TestDriver(build(), {"users": 3, "clicks": 2})
    with client.producer(key_serializer="str", value_serializer="str") as producer:
        for key, value, ts in users:
            producer.send("users", value, key, timestamp=ts)
            driver.send("users", key, value, ts)
    runner = Runner(build(), client, commit_interval_ms=100, repartition_purge_interval_ms=0)
    assert runner.run_until(lambda r: r.metrics()["records-consumed"] >= len(users), timeout=30)
    with client.producer(key_serializer="str", value_serializer="json") as producer:
        for key, value, ts in clicks:
            producer.send("clicks", value, key, timestamp=ts)
            driver.send("clicks", key, value, ts)
    # Each click is read twice: from clicks, then from the repartition topic.
    total = len(users) + 2 * len(clicks)
    assert runner.run_until(lambda r: r.metrics()["records-consumed"] >= total, timeout=30)
    runner.close()
    repartition = client.admin().describe_topic("enrich-by-user-repartition").partitions
    assert sum(p.high_watermark for p in repartition) == len(clicks)
    assert sum(p.log_start_offset for p in repartition) > 0  # read records were purged
    got = sorted((r.key, tuple(r.value)) for r in read_all(client, "enriched"))
    want = sorted((r.key, tuple(r.value)) for r in driver.output("enriched"))
    assert got == want
    assert any(country is None for _, (_, country) in got)  # users u20..u24 are unknown
    client.close()


def test_several_partitions_of_a_task_go_oldest_first() -> None:
    """A task reading two topics takes the partition whose next record is oldest first."""
    seen: list[int] = []
    app = App("order")
    app.merge(app.stream("a"), app.stream("b")).peek(lambda k, v: seen.append(v)).to("o")
    task = app.topology().create_task((0, 0))
    a = [(None, ts, ts) for ts in (1, 2, 5, 9)]
    b = [(None, ts, ts) for ts in (3, 4, 6, 7, 8)]
    _feed(task, [("a", 0, a), ("b", 0, b)])
    assert seen == [1, 2, 3, 4, 5, 6, 7, 8, 9]


# --- several worker processes over a broker -----------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    directory = tmp_path_factory.mktemp("headwater")
    broker = start_broker(directory / "data", directory / "broker.log")
    yield broker
    code = broker.stop()
    assert code == 0, f"broker did not shut down cleanly ({code}): {broker.log_tail()}"


@pytest.fixture(params=["headwater", "kafka"])
def bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "kafka":
        yield request.getfixturevalue("kafka_broker").bootstrap
        return
    broker: ServedBroker = request.getfixturevalue("served")
    yield broker.bootstrap
    assert broker.process.poll() is None, f"the broker exited: {broker.log_tail()}"
    assert "Traceback" not in broker.log_path.read_text(errors="replace"), broker.log_tail()


class Worker:
    """A runtime_worker.py process; its output goes to a file (read when it fails)."""

    def __init__(self, url: str, app_id: str, source: str, sink: str, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), url, app_id, source, sink, name],
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, sig: int = signal.SIGTERM) -> dict[str, int]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._file.close()
        if sig == signal.SIGKILL:
            return {}
        assert code == 0, f"{self.name} exited with {code}:\n{self.output()[-3000:]}"
        last = self.output().strip().splitlines()[-1]
        metrics: dict[str, int] = json.loads(last)
        return metrics


def test_workers_split_the_partitions_and_survive_a_kill(bootstrap: str, tmp_path: Path) -> None:
    """Three worker processes with one application id share the partitions; one is SIGKILLed
    while it processes; the survivors take its partition over, restoring the open windows
    from the changelog, and every final result equals the TestDriver's."""
    url = f"kafka://{bootstrap}"
    app_id, source, sink = unique("scale"), unique("input"), unique("output")
    events = make_events(3_000)
    first, second = events[:1_200], events[1_200:]
    client = headwater.connect(url)
    admin = client.admin()
    admin.create_topic(source, 3)
    admin.create_topic(sink, 1)
    workers = [
        Worker(url, app_id, source, sink, f"worker-{i}", tmp_path / f"worker-{i}.log")
        for i in range(3)
    ]
    try:

        def owners() -> dict[str, list[int]]:
            try:
                group = admin.describe_group(app_id)
            except ClientError as error:
                # Kafka may answer COORDINATOR_LOAD_IN_PROGRESS (retriable) for a new group,
                # and describe_group does not retry it yet.
                if not error.retriable:
                    raise
                return {}
            if group.state != "Stable":
                return {}
            return {m.client_id: sorted(tp.partition for tp in m.assignment) for m in group.members}

        def split() -> bool:
            found = owners()
            assert all(worker.alive() for worker in workers), workers[0].output()[-3000:]
            return len(found) == 3 and sorted(p for ps in found.values() for p in ps) == [0, 1, 2]

        wait_until(split, "three workers sharing the partitions")
        victim = TopicPartition(source, owners()["worker-0"][0])
        produce(client, source, first)

        def committed() -> dict[TopicPartition, int]:
            return admin.list_group_offsets(app_id)

        wait_until(lambda: sum(committed().values()) == len(first), "the first part processed")
        first_ends = committed()
        # Mid-stream: the victim is killed once it has processed (and committed) part of the
        # second part, with more of its input still coming.
        chunks = [second[i : i + 200] for i in range(0, len(second), 200)]
        produce(client, source, chunks[0])
        produce(client, source, chunks[1])
        wait_until(lambda: committed().get(victim, 0) > first_ends[victim], "the victim processing")
        workers[0].wait(signal.SIGKILL)
        for chunk in chunks[2:]:
            produce(client, source, chunk)
        produce_end(client, source, 3)
        want = expected(runtime_worker.build_app(app_id, source, sink), source, sink, events, 3)
        total = len(events) + 3
        wait_until(lambda: sum(committed().values()) == total, "every record processed")
        wait_until(lambda: set(results(client, sink)[0]) >= set(want), "every window")
        survivors = [worker.wait() for worker in workers[1:]]
        assert sum(m["restored-records"] for m in survivors) > 0
        assert_same_results(client, sink, want)
    finally:
        for worker in workers:
            if worker.alive():
                worker.wait(signal.SIGKILL)
        client.close()

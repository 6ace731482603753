"""State: stores and their changelogs, the codec, restarts from changelogs, the task seam, and
the driver's determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.streams import (
    App,
    Hopping,
    InMemoryKeyValueStore,
    InMemoryWindowStore,
    Record,
    Session,
    Sliding,
    StateCodec,
    TaskId,
    Tumbling,
    Window,
    WindowResult,
)
from headwater.streams.testing import TestDriver


def test_key_value_store_tracks_changes_in_order() -> None:
    store = InMemoryKeyValueStore("s")
    store.put("b", 1)
    store.put("a", 2)
    store.put("b", 3)
    store.delete("a")
    store.put("c", None)  # a None value deletes
    assert store.changes() == [("b", 3), ("a", None), ("c", None)]
    assert list(store.items()) == [("b", 3)] and len(store) == 1
    store.mark_committed()
    assert store.changes() == []
    fresh = InMemoryKeyValueStore("s")
    fresh.restore([("b", 1), ("a", 2), ("b", 3), ("a", None)])
    assert dict(fresh.items()) == {"b": 3} and fresh.changes() == []


def test_window_store_changes_and_restore() -> None:
    store = InMemoryWindowStore("w")
    store.put(("k", 0), 1)
    store.put(("j", 10), 2)
    assert store.get(("k", 0)) == 1 and store.get(("k", 10)) is None
    assert store.changes() == [(("k", 0), 1), (("j", 10), 2)]
    store.mark_committed()
    store.delete(("k", 0))
    assert store.changes() == [(("k", 0), None)]
    assert store.drop(10) == {"j": 2}
    assert len(store) == 0
    fresh = InMemoryWindowStore("w")
    fresh.restore([(("k", 0), 1), (("j", 10), 2), (("k", 0), None)])
    assert list(fresh.items()) == [(("j", 10), 2)]


codec_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200)
@given(codec_values)
def test_codec_round_trips_tuples_and_lists(value: Any) -> None:
    codec = StateCodec()
    assert codec.decode(codec.encode(value)) == value
    back = codec.decode(codec.encode((value, [value])))
    assert type(back) is tuple and type(back[1]) is list


def test_codec_keeps_model_types() -> None:
    codec = StateCodec()
    result = WindowResult(("k", 1), Window(0, 10), (2.5, 3))
    assert codec.decode(codec.encode(result)) == result
    assert type(codec.decode(codec.encode(result))) is WindowResult
    assert codec.decode(codec.encode({("a", 1): [Record(1, 2, 3)]})) == {
        ("a", 1): [Record(1, 2, 3)]
    }


# --- restarts -----------------------------------------------------------------------------------


def stateful_app() -> App:
    app = App("restart")
    payments = app.stream("payments")
    payments.window(Tumbling(10, grace_ms=3), name="tumbling").sum().to("tumbling")
    payments.window(Hopping(10, 5), name="hopping", emit="update").count().to("hopping")
    payments.window(Session(4, grace_ms=2), name="sessions").sum().to("sessions")
    payments.window(Sliding(6, grace_ms=2), name="sliding").max().to("sliding")
    payments.group(name="totals").sum().to_stream().to("totals")
    payments.join(
        app.stream("refunds"), lambda p, r: (p, r), within_ms=5, grace_ms=2, how="outer", name="j"
    ).to("joined")
    payments.join(app.table("limits"), lambda p, lim: lim is not None and p > lim, how="left").to(
        "over"
    )
    return app


def events(seed: int) -> list[tuple[str, str, int, int]]:
    import random

    rng = random.Random(seed)
    out = []
    for ts in range(0, 400, 3):
        topic = rng.choice(["payments", "payments", "refunds", "limits"])
        out.append((topic, rng.choice("abcd"), rng.randint(0, 20), ts + rng.randint(-4, 4)))
    return out


def run(inputs: list[tuple[str, str, int, int]], restart_every: int | None) -> dict[str, Any]:
    partitions = {"payments": 2, "refunds": 2, "limits": 2}
    driver = TestDriver(stateful_app(), partitions)
    for i, (topic, key, value, ts) in enumerate(inputs):
        driver.send(topic, key, value, timestamp=ts)
        if restart_every and i % restart_every == restart_every - 1:
            driver.restart()
    driver.finish()
    return {topic: driver.output(topic) for topic in driver.topology.sink_topics}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), every=st.integers(1, 40))
def test_restart_from_changelogs_changes_nothing(seed: int, every: int) -> None:
    inputs = events(seed)
    assert run(inputs, every) == run(inputs, None)


def test_restart_keeps_late_detection() -> None:
    app = App("r")
    app.stream("in").window(Tumbling(10), name="w").count().to("out")
    driver = TestDriver(app)
    driver.send("in", "k", 1, timestamp=50)
    driver.restart()
    driver.send("in", "k", 1, timestamp=5)
    assert driver.late_count("w") == 1
    assert driver.store("w").get(("k", 50)) == 1


def test_changelog_entries_decode_to_store_contents() -> None:
    app = App("r")
    app.stream("in").group(name="counts").count()
    driver = TestDriver(app, {"in": 2})
    driver.send_many("in", [("a", 0, 1), ("b", 0, 2), ("a", 0, 3)])
    log = driver.changelog("counts")
    rebuilt: dict[tuple[int, Any], Any] = {}
    for partition, key, value in log:
        rebuilt[(partition, key)] = value
    for partition in range(2):
        for key, value in driver.store("counts", partition).items():
            assert rebuilt[(partition, key)] == value
    assert driver.topology.changelog_topics == {"r-counts-changelog": 2}


# --- the seam -----------------------------------------------------------------------------------


def test_task_seam_by_hand() -> None:
    app = App("seam")
    (
        app.stream("in")
        .key_by(lambda k, v: v % 2, name="parity")
        .window(Tumbling(10), name="sums")
        .sum()
        .to("out", value="json")
    )
    topology = app.topology({"in": 2})
    assert topology.source_topics == ["in"] and topology.sink_topics == ["out"]
    assert topology.repartition_topics == {"seam-parity-repartition": 2}
    assert topology.changelog_topics == {"seam-sums-changelog": 2}
    assert topology.stores["sums"].retention_ms == 10
    assert topology.subtopology_for("in").id == 0
    assert topology.subtopology_for("seam-parity-repartition").id == 1
    assert topology.task_ids() == [TaskId(0, 0), TaskId(0, 1), TaskId(1, 0), TaskId(1, 1)]

    first = topology.create_task((0, 0))
    first.process("in", 0, [("x", 1, 1), ("y", 2, 2), ("z", 3, 3)])
    repartitioned = first.drain_output()["seam-parity-repartition"]
    assert [(r.key, r.value) for r in repartitioned] == [(1, 1), (0, 2), (1, 3)]

    second = topology.create_task((1, 1))
    odd = [r for r in repartitioned if r.key == 1]
    second.process("seam-parity-repartition", 1, odd)
    assert second.drain_output() == {}
    changelog = second.changelog()
    assert changelog == {"seam-sums-changelog": [((1, 0), 4)]}
    second.mark_committed()
    checkpoint = second.checkpoint()

    moved = topology.create_task((1, 1))
    moved.restore("sums", changelog["seam-sums-changelog"])
    moved.restore_checkpoint(checkpoint)
    moved.process("seam-parity-repartition", 1, [(1, 5, 12)])
    [result] = moved.drain_output()["out"]
    assert result.value == WindowResult(1, Window(0, 10), 4)  # 1 + 3, restored; 5 is later
    assert topology.sinks["out"].value_serializer is not None
    assert topology.sinks["out"].value_serializer(result.value.value) == b"4"
    assert topology.sources["in"].key_deserializer is not None


def test_processing_time_via_punctuate_on_a_task() -> None:
    app = App("seam")
    app.stream("in").window(Tumbling(100, processing_time=True), name="w").count().to("out")
    task = app.topology().create_task((0, 0), wall_clock_ms=0)
    task.process("in", 0, [("k", None, 0)])
    task.punctuate(99)
    assert task.drain_output() == {}
    task.punctuate(100)
    assert [r.value.value for r in task.drain_output()["out"]] == [1]


# --- determinism --------------------------------------------------------------------------------

_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_streams_state import events, run
out = run(events(3), None)
print(json.dumps({{t: [repr(r) for r in rs] for t, rs in out.items()}}, sort_keys=True))
"""


def test_driver_is_deterministic_across_hash_seeds() -> None:
    """Same input, same output, whatever PYTHONHASHSEED makes of string hashes."""
    script = _SCRIPT.format(tests=os.path.dirname(__file__))
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0]["tumbling"]
    local = run(events(3), None)
    assert {t: [repr(r) for r in rs] for t, rs in local.items()} == outputs[0]


def test_task_is_a_task_context() -> None:
    from headwater.streams._model import TaskContext

    app = App("ctx")
    app.stream("in").window(Tumbling(10), name="w").count()
    task = app.topology().create_task((0, 0))
    context: TaskContext = task
    assert context.application_id == "ctx" and context.partition == 0
    assert context.stream_time == -1
    task.process("in", 0, [("k", 1, 42)])
    assert context.stream_time == 42
    assert context.store("w").get(("k", 40)) == 1
    context.late("w", Record("k", 1, 0))
    assert task.metrics() == {"w.late-records": 1}


def test_hopping_update_and_processing_time() -> None:
    app = App("h")
    stream = app.stream("in")
    stream.window(Hopping(10, 5), name="upd", emit="update").sum().to("upd")
    stream.window(Hopping(10, 5, processing_time=True), name="pt").count().to("pt")
    driver = TestDriver(app, wall_clock_ms=7)
    driver.send("in", "k", 2, timestamp=7)
    assert [(r.value.window, r.value.value) for r in driver.output("upd")] == [
        (Window(5, 15), 2),
        (Window(0, 10), 2),
    ]
    driver.advance_wall_clock(3)  # 10: [0, 10) closes
    assert [(r.value.window, r.value.value) for r in driver.output("pt")] == [(Window(0, 10), 1)]
    driver.advance_wall_clock(5)  # 15: [5, 15) closes
    assert [r.value.window for r in driver.output("pt")] == [Window(0, 10), Window(5, 15)]

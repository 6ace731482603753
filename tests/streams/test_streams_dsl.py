"""The DSL's stateless steps, sinks, repartitioning and step naming, through the TestDriver."""

from __future__ import annotations

import pytest

from headwater.errors import ConfigError, HeadwaterError
from headwater.streams import (
    App,
    Record,
    StreamsError,
    TopologyError,
    Tumbling,
    UnknownStoreError,
)
from headwater.streams.testing import TestDriver


def values(driver: TestDriver, topic: str) -> list[object]:
    return [r.value for r in driver.output(topic)]


def test_map_values_filter_peek_to() -> None:
    app = App("a")
    seen: list[tuple[object, object]] = []
    (
        app.stream("in")
        .map_values(lambda v: v * 10)
        .filter(lambda k, v: v > 10)
        .peek(lambda k, v: seen.append((k, v)))
        .to("out")
    )
    driver = TestDriver(app)
    driver.send_many("in", [("a", 1, 1), ("b", 2, 2), ("c", 3, 3)])
    assert driver.output("out") == [Record("b", 20, 2), Record("c", 30, 3)]
    assert seen == [("b", 20), ("c", 30)]


def test_map_and_flat_map_keep_timestamps() -> None:
    app = App("a")
    app.stream("in").map(lambda k, v: (v, k)).to("swapped")
    app.stream("words").flat_map(lambda k, v: [(w, len(w)) for w in v.split()]).to("lengths")
    driver = TestDriver(app)
    driver.send("in", "k", "v", timestamp=5)
    driver.send("words", None, "to be or", timestamp=9)
    assert driver.output("swapped") == [Record("v", "k", 5)]
    assert driver.output("lengths") == [Record("to", 2, 9), Record("be", 2, 9), Record("or", 2, 9)]


def test_flat_map_then_filter_fused() -> None:
    app = App("a")
    (
        app.stream("in")
        .flat_map(lambda k, v: [(k, x) for x in range(v)])
        .filter(lambda k, v: v % 2 == 0)
        .map_values(lambda v: v + 100)
        .to("out")
    )
    driver = TestDriver(app)
    driver.send_many("in", [("a", 5, 1), ("b", 0, 2), ("c", 2, 3)])
    assert driver.output("out") == [
        Record("a", 100, 1),
        Record("a", 102, 1),
        Record("a", 104, 1),
        Record("c", 100, 3),
    ]


def test_branch_first_match_wins_and_unmatched_dropped() -> None:
    app = App("a")
    small, big = app.stream("in").branch(lambda k, v: v < 10, lambda k, v: v < 100)
    small.to("small")
    big.to("big")
    driver = TestDriver(app)
    driver.send_many("in", [(None, v, i) for i, v in enumerate([1, 50, 500, 5])])
    assert values(driver, "small") == [1, 5]
    assert values(driver, "big") == [50]


def test_merge_and_fan_out() -> None:
    app = App("a")
    a = app.stream("a")
    b = app.stream("b").map_values(str.upper)
    merged = a.merge(b)
    merged.to("all")
    merged.filter(lambda k, v: v.startswith("X")).to("xs")
    driver = TestDriver(app)
    driver.send("a", None, "x1", timestamp=1)
    driver.send("b", None, "x2", timestamp=2)
    driver.send("a", None, "y", timestamp=3)
    assert values(driver, "all") == ["x1", "X2", "y"]
    assert values(driver, "xs") == ["X2"]


def test_app_merge_helper() -> None:
    app = App("a")
    app.merge(app.stream("a"), app.stream("b")).to("out")
    driver = TestDriver(app)
    driver.send("b", 1, 1, timestamp=0)
    driver.send("a", 2, 2, timestamp=0)
    assert values(driver, "out") == [1, 2]


def test_custom_sink_per_record_and_batch() -> None:
    app = App("a")
    one: list[Record] = []
    many: list[list[Record]] = []
    stream = app.stream("in")
    stream.sink(one.append)
    stream.sink(many.append, batch=True)
    driver = TestDriver(app)
    driver.send_many("in", [("k", 1, 1), ("k", 2, 2)])
    assert one == [Record("k", 1, 1), Record("k", 2, 2)]
    assert many == [[Record("k", 1, 1), Record("k", 2, 2)]]
    assert one[0].key == "k"


def test_timestamp_extractor_drives_event_time() -> None:
    app = App("a")
    (
        app.stream("in", timestamp=lambda v: v["ts"])
        .window(Tumbling(10), name="w")
        .count()
        .to("counts")
    )
    driver = TestDriver(app)
    driver.send("in", "k", {"ts": 3}, timestamp=999_999)
    driver.send("in", "k", {"ts": 12}, timestamp=0)
    [record] = driver.output("counts")
    assert record.value.window == (0, 10)
    assert record.value.value == 1


def test_key_by_repartitions_before_a_stateful_step() -> None:
    app = App("shop")
    (
        app.stream("orders")
        .key_by(lambda k, v: v["customer"], name="by-customer")
        .group(name="totals")
        .sum(lambda v: v["amount"])
        .to_stream()
        .to("totals")
    )
    topology = app.topology({"orders": 4})
    assert topology.repartition_topics == {"shop-by-customer-repartition": 4}
    assert len(topology.subtopologies) == 2
    driver = TestDriver(app, {"orders": 4})
    orders = [(f"order-{i}", {"customer": f"c{i % 3}", "amount": i}, i) for i in range(30)]
    driver.send_many("orders", orders)
    final: dict[object, object] = {}
    for record in driver.output("totals"):
        final[record.key] = record.value
    expected = {f"c{c}": sum(i for i in range(30) if i % 3 == c) for c in range(3)}
    assert final == expected
    # Every customer's state lives in exactly one partition.
    owners = {
        c: [p for p in range(4) if driver.store("totals", p).get(c) is not None] for c in expected
    }
    assert all(len(found) == 1 for found in owners.values())
    assert driver.output("shop-by-customer-repartition")  # the internal topic is visible


def test_no_repartition_without_key_change_or_state() -> None:
    app = App("a")
    app.stream("in").key_by(lambda k, v: v).to("out")
    app.stream("in2").map_values(str).window(Tumbling(5)).count().to("counts")
    assert app.topology().repartition_topics == {}


def test_explicit_repartition_with_partitions() -> None:
    app = App("a")
    app.stream("in").repartition(name="spread", partitions=3).to("out")
    topology = app.topology({"in": 1})
    assert topology.repartition_topics == {"a-spread-repartition": 3}
    driver = TestDriver(app, {"in": 1})
    driver.send_many("in", [(f"k{i}", i, i) for i in range(9)])
    assert sorted(values(driver, "out")) == list(range(9))  # type: ignore[type-var]


def test_output_topic_read_back_by_the_same_app() -> None:
    app = App("a")
    app.stream("in").map_values(lambda v: v + 1).to("middle")
    app.stream("middle").map_values(lambda v: v * 2).to("out")
    driver = TestDriver(app)
    driver.send("in", "k", 1, timestamp=0)
    assert values(driver, "out") == [4]


def test_take_output_consumes() -> None:
    app = App("a")
    app.stream("in").to("out")
    driver = TestDriver(app)
    driver.send("in", 1, 1)
    assert driver.take_output("out") == [Record(1, 1, 0)]
    assert driver.take_output("out") == []
    driver.send("in", 2, 2)
    driver.clear_output()
    assert driver.output("out") == []


# --- naming -----------------------------------------------------------------------------------


def build(explicit: bool) -> App:
    app = App("names")
    stream = app.stream("in")
    stream.map_values(abs).window(Tumbling(10), name="w1" if explicit else None).count()
    stream.key_by(lambda k, v: v).group().count()
    stream.join(app.table("t"), lambda a, b: (a, b))
    return app


def test_derived_names_are_stable_across_builds() -> None:
    first = build(False).topology()
    second = build(False).topology()
    assert list(first.stores) == list(second.stores)
    assert first.changelog_topics == second.changelog_topics
    assert first.repartition_topics == second.repartition_topics
    assert sorted(first.stores) == ["aggregate-1", "table-1", "window-1"]
    assert first.changelog_topics["names-window-1-changelog"] == 1
    assert list(first.repartition_topics) == ["names-key_by-1-repartition"]


def test_derived_names_count_per_kind() -> None:
    """Adding steps of another kind does not rename state."""
    app = App("names")
    stream = app.stream("in").map_values(abs).filter(lambda k, v: True).peek(print)
    stream.window(Tumbling(10)).count()
    assert list(app.topology().stores) == ["window-1"]


def test_explicit_names_win() -> None:
    topology = build(True).topology()
    assert "w1" in topology.stores
    assert topology.stores["w1"].changelog_topic == "names-w1-changelog"


def test_duplicate_names_refused() -> None:
    app = App("a")
    stream = app.stream("in")
    stream.window(Tumbling(5), name="x").count()
    with pytest.raises(TopologyError, match="'x'"):
        stream.group(name="x").count()


def test_bad_names_and_ids_refused() -> None:
    with pytest.raises(TopologyError):
        App("has space")
    app = App("a")
    with pytest.raises(TopologyError):
        app.stream("in").map_values(abs, name="a/b")


def test_errors_are_headwater_errors() -> None:
    assert issubclass(TopologyError, StreamsError)
    assert issubclass(TopologyError, ConfigError)
    assert issubclass(StreamsError, HeadwaterError)
    assert issubclass(UnknownStoreError, KeyError)


def test_reading_a_topic_twice_refused() -> None:
    app = App("a")
    app.stream("in")
    with pytest.raises(TopologyError, match="'in'"):
        app.table("in")


def test_unknown_topic_and_store() -> None:
    app = App("a")
    app.stream("in").to("out")
    driver = TestDriver(app)
    with pytest.raises(TopologyError, match="nope"):
        driver.send("nope", 1, 1)
    with pytest.raises(UnknownStoreError, match="nope"):
        driver.store("nope")


def test_app_without_source_refused() -> None:
    with pytest.raises(TopologyError):
        App("a").topology()


def test_bad_deserializer_name_refused() -> None:
    with pytest.raises(ConfigError):
        App("a").stream("in", value="yaml")


def test_window_spec_validation() -> None:
    with pytest.raises(TopologyError):
        Tumbling(0)
    with pytest.raises(TopologyError):
        Tumbling(10, grace_ms=-1)
    from headwater.streams import Hopping

    with pytest.raises(TopologyError):
        Hopping(10, 20)


def test_describe_mentions_steps_and_stores() -> None:
    text = build(True).topology().describe()
    assert "w1" in text and "names-w1-changelog" in text and "sub-topology 1" in text

"""Run a topology in memory, deterministically: no broker, no threads, no real clock.

    from headwater.streams import App, Tumbling
    from headwater.streams.testing import TestDriver

    app = App("fraud-detector")
    (app.stream("payments", value="json")
        .window(Tumbling(60_000), name="per-minute")
        .sum(lambda p: p["amount"])
        .to("totals", value="json"))
    driver = TestDriver(app, partitions={"payments": 4})
    driver.send("payments", "card-1", {"amount": 5}, timestamp=1_000)
    driver.send("payments", "card-1", {"amount": 7}, timestamp=61_000)   # closes the minute
    [record] = driver.output("totals")       # Record(key, WindowResult(...), timestamp)

Records are routed as a Kafka runtime would route them: to the partition Kafka's default
partitioner picks for the key's bytes (bytes as they are, str as UTF-8, anything else through
the app's codec), through repartition topics (whose records go through the codec, so what cannot
be serialized fails here too), and from any output topic the app also reads back into it.
`commit()` writes each store's changes to its changelog (encoded with the codec) and keeps each
task's checkpoint, as a runtime does every commit interval; `restart()` commits, then rebuilds
every task from the changelogs and checkpoints alone, as a new instance taking over would.

Thread-safety: none; one test drives one driver.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import Any, cast

from headwater.log.partitioner import partition_for_key
from headwater.streams._dsl import App
from headwater.streams._errors import TopologyError, UnknownStoreError
from headwater.streams._model import KeyValueStore, Record
from headwater.streams._topology import Task, TaskId, Topology

_new_tuple: Any = tuple.__new__


def _records(tuples: Iterable[tuple[Any, Any, int]]) -> list[Record]:
    """`Record`s from plain tuples, built in C (no Python call per record)."""
    return list(map(_new_tuple, repeat(Record), tuples))


class TestDriver:
    """Drives every task of an app's topology in memory; owns the tasks, the output topics
    and the changelogs. Thread-safety: none (one thread)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: App,
        partitions: Mapping[str, int] | None = None,
        *,
        wall_clock_ms: int = 0,
    ) -> None:
        self.topology: Topology = app.topology(partitions)
        self._codec: Any = self.topology.codec
        self._wall_clock_ms = wall_clock_ms
        self.tasks: dict[TaskId, Task] = {
            task_id: self.topology.create_task(task_id, wall_clock_ms=wall_clock_ms)
            for task_id in self.topology.task_ids()
        }
        self._outputs: dict[str, list[Record]] = {}
        self._changelogs: dict[str, list[tuple[int, bytes, bytes | None]]] = {}
        self._checkpoints: dict[TaskId, dict[str, int]] = {}
        self._partitions: dict[int, dict[Any, int]] = {}  # count -> key -> partition

    # --- input ------------------------------------------------------------------------------

    @property
    def wall_clock_ms(self) -> int:
        return self._wall_clock_ms

    def send(
        self,
        topic: str,
        key: Any,
        value: Any,
        timestamp: int | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        """One record; `timestamp` defaults to the driver's wall clock."""
        ts = self._wall_clock_ms if timestamp is None else timestamp
        self.send_many(topic, [(key, value, ts)], partition=partition)

    def send_many(
        self,
        topic: str,
        records: Iterable[tuple[Any, Any, int]],
        *,
        partition: int | None = None,
    ) -> None:
        """Many `(key, value, timestamp)` records (or `Record`s), processed as micro-batches
        per partition: the fast path."""
        batch = records if isinstance(records, list) else list(records)
        self._route(topic, batch, partition)

    def advance_wall_clock(self, ms: int) -> None:
        """Move the wall clock forward by `ms` and punctuate every task (processing-time
        windows close)."""
        if ms < 0:
            raise ValueError("the wall clock only moves forward")
        self._wall_clock_ms += ms
        for task in self.tasks.values():
            task.punctuate(self._wall_clock_ms)
        self._pump()

    def finish(self) -> None:
        """End of input: close every open window and emit unmatched join records (a bounded
        run's last step; Kafka Streams never does this on its own)."""
        for task in self.tasks.values():
            task.finish()
        self._pump()

    # --- output and state -------------------------------------------------------------------

    def output(self, topic: str) -> list[Record]:
        """Every record produced to `topic` so far (sinks and repartition topics), in order."""
        return list(self._outputs.get(topic, ()))

    def take_output(self, topic: str) -> list[Record]:
        """The records produced to `topic` since the last take, forgetting them (as a consumer
        reading the topic would; keeps a long run's memory flat)."""
        return self._outputs.pop(topic, [])

    def clear_output(self, topic: str | None = None) -> None:
        if topic is None:
            self._outputs.clear()
        else:
            self._outputs.pop(topic, None)

    def store(self, name: str, partition: int = 0) -> KeyValueStore:
        """The store `name` of the task for `partition`."""
        spec = self.topology.stores.get(name)
        if spec is None:
            known = ", ".join(sorted(self.topology.stores)) or "none"
            raise UnknownStoreError(f"no store {name!r} (stores: {known})")
        task = self.tasks.get(TaskId(spec.subtopology, partition))
        if task is None:
            raise UnknownStoreError(f"store {name!r} has no partition {partition}")
        return task.store(name)

    def metrics(self) -> dict[str, int]:
        """Every task's metrics, summed per name (`<step>.late-records`)."""
        out: dict[str, int] = {}
        for task in self.tasks.values():
            for name, value in task.metrics().items():
                out[name] = out.get(name, 0) + value
        return out

    def late_count(self, step: str) -> int:
        """How many records `step` found late, over all partitions."""
        return self.metrics().get(f"{step}.late-records", 0)

    def changelog(self, store: str) -> list[tuple[int, Any, Any]]:
        """`(partition, key, value)` written to `store`'s changelog so far (committing first),
        decoded."""
        self.commit()
        topic = self.topology.stores[store].changelog_topic
        decode = self._codec.decode
        return [
            (p, decode(k), None if v is None else decode(v))
            for p, k, v in self._changelogs.get(topic, ())
        ]

    def restart(self) -> None:
        """Replace every task by a fresh one restored from the changelogs and checkpoints, as
        an instance taking the tasks over would; commits first, so nothing is lost. RocksDB
        stores reopen on their files, and the whole changelog is replayed over them."""
        self.commit()
        self.close()
        decode = self._codec.decode
        fresh: dict[TaskId, Task] = {}
        for task_id in self.topology.task_ids():
            task = self.topology.create_task(task_id, wall_clock_ms=self._wall_clock_ms)
            for name in task.stores:
                topic = self.topology.stores[name].changelog_topic
                entries = [
                    (decode(k), None if v is None else decode(v))
                    for p, k, v in self._changelogs.get(topic, ())
                    if p == task_id.partition
                ]
                task.restore(name, entries)
            task.restore_checkpoint(self._checkpoints.get(task_id, {}))
            fresh[task_id] = task
        self.tasks = fresh

    def close(self) -> None:
        """Close every task's stores (RocksDB: files and locks); uncommitted changes are
        dropped, as a crashed instance's would be."""
        for task in self.tasks.values():
            task.close()

    def __enter__(self) -> TestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- routing ----------------------------------------------------------------------------

    def _partition_of(self, key: Any, count: int) -> int:
        if count == 1 or key is None:
            return 0
        cache = self._partitions.setdefault(count, {})
        found = cache.get(key)
        if found is None:
            if isinstance(key, bytes):
                data = key
            elif isinstance(key, str):
                data = key.encode()
            else:
                data = self._codec.encode(key)
            found = cache[key] = partition_for_key(data, count)
        return found

    def _route(self, topic: str, records: list[Any], partition: int | None) -> None:
        spec = self.topology.sources.get(topic)
        if spec is None:
            raise TopologyError(f"topic {topic!r} is not read by {self.topology.application_id!r}")
        if partition is not None and not 0 <= partition < spec.partitions:
            raise TopologyError(f"topic {topic!r} has {spec.partitions} partitions")
        self._deliver(topic, records, partition)
        self._pump()

    def _deliver(self, topic: str, records: list[Any], partition: int | None) -> None:
        spec = self.topology.sources[topic]
        count = spec.partitions
        if partition is not None or count == 1:
            per_partition = {partition or 0: records}
        else:
            per_partition = {}
            partition_of = self._partition_of
            for record in records:
                per_partition.setdefault(partition_of(record[0], count), []).append(record)
        for p in sorted(per_partition):
            self.tasks[TaskId(spec.subtopology, p)].process(topic, p, per_partition[p])

    def _pump(self) -> None:
        """Collect what the tasks produced; feed what the app reads back in, until quiet."""
        queue: deque[tuple[str, list[Any]]] = deque()
        sources = self.topology.sources
        encode, decode = self._codec.encode, self._codec.decode
        while True:
            for task in self.tasks.values():
                for topic, produced in task.drain_output().items():
                    kept = self._outputs.setdefault(topic, [])
                    spec = sources.get(topic)
                    records = cast(list[Record], produced)  # ToOp makes Records
                    if spec is not None and spec.internal:
                        # A repartition topic carries bytes: round-trip through the codec.
                        records = _records(
                            [(decode(encode(k)), decode(encode(v)), t) for k, v, t in records]
                        )
                    kept.extend(records)
                    if spec is not None:
                        queue.append((topic, records))
            if not queue:
                return
            while queue:
                topic, records = queue.popleft()
                self._deliver(topic, records, None)

    def commit(self) -> None:
        """Write every task's store changes to the changelogs and keep its checkpoint."""
        encode = self._codec.encode
        for task_id, task in self.tasks.items():
            for topic, entries in task.changelog().items():
                log = self._changelogs.setdefault(topic, [])
                log.extend(
                    (task_id.partition, encode(k), None if v is None else encode(v))
                    for k, v in entries
                )
            task.mark_committed()
            self._checkpoints[task_id] = task.checkpoint()


__all__ = ["TestDriver"]

"""Stream processing: event time, windows, joins, tables and durable state, in Python.

    from headwater.streams import App, Tumbling

    app = App("fraud-detector")
    payments = app.stream("payments", key="str", value="json")
    (payments
        .filter(lambda card, p: p["amount"] > 0)
        .window(Tumbling(60_000, grace_ms=5_000), name="per-minute")
        .sum(lambda p: p["amount"])
        .to("spend-per-minute", key="str", value="json"))

A dataflow is compiled (`app.topology(partitions)`) into tasks that process micro-batches; the
in-memory `headwater.streams.testing.TestDriver` runs it with no broker, and `Runner` (or
`app.run(url)`) over topics on any backend, in as many processes as there are partitions.
`_topology` documents the seam a runtime uses (topics, tasks, changelogs); `_runtime` the
commit protocol and where checkpoints live; `_dsl` the naming rule for stateful steps;
`_windows` the window semantics.
"""

from __future__ import annotations

from headwater.streams._aggregations import Aggregation
from headwater.streams._dsl import (
    AggregateStream,
    App,
    GroupedStream,
    Stream,
    Table,
    WindowedStream,
)
from headwater.streams._errors import (
    CoPartitioningError,
    InternalTopicError,
    MissingSourceTopicError,
    StateRestoreError,
    StreamsError,
    TopologyError,
    UnknownStoreError,
)
from headwater.streams._model import KeyValueStore, Record, Window, WindowedKey, WindowResult
from headwater.streams._operators import Change
from headwater.streams._rocksdb import RocksDBKeyValueStore, RocksDBOptions, RocksDBWindowStore
from headwater.streams._runtime import Runner, RuntimeConfig
from headwater.streams._stores import (
    ChangeloggedStore,
    InMemoryKeyValueStore,
    InMemoryWindowStore,
    StateCodec,
)
from headwater.streams._topology import (
    SinkSpec,
    SourceSpec,
    StoreSpec,
    SubTopology,
    Task,
    TaskId,
    Topology,
)
from headwater.streams._windows import CountWindow, Hopping, Session, Sliding, Tumbling

__all__ = [
    "AggregateStream",
    "Aggregation",
    "App",
    "Change",
    "ChangeloggedStore",
    "CoPartitioningError",
    "CountWindow",
    "GroupedStream",
    "Hopping",
    "InMemoryKeyValueStore",
    "InMemoryWindowStore",
    "InternalTopicError",
    "KeyValueStore",
    "MissingSourceTopicError",
    "Record",
    "RocksDBKeyValueStore",
    "RocksDBOptions",
    "RocksDBWindowStore",
    "Runner",
    "RuntimeConfig",
    "Session",
    "SinkSpec",
    "Sliding",
    "SourceSpec",
    "StateCodec",
    "StateRestoreError",
    "StoreSpec",
    "Stream",
    "StreamsError",
    "SubTopology",
    "Table",
    "Task",
    "TaskId",
    "Topology",
    "TopologyError",
    "Tumbling",
    "UnknownStoreError",
    "Window",
    "WindowResult",
    "WindowedKey",
    "WindowedStream",
]

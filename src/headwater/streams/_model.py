"""The data model every streams module shares: records in flight, windows, stores, the task.

A dataflow is compiled into tasks. A task is one partition of one sub-topology (the operators
between a source and the next repartition or sink); it owns its operators' state for that
partition and processes records in micro-batches: each operator takes a list of records and
pushes a list downstream, so per-record overhead is one tuple and a few list operations, never a
call chain per record per operator.

Time is event time unless a window says otherwise. A task's stream time is the largest
timestamp it has seen on its inputs (Kafka Streams' rule): it only moves forward, windows close
when it passes their end plus grace, and a record whose window already closed is late.

Thread-safety: a task and everything it owns is driven by one thread at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol


class Record(NamedTuple):
    """One record in flight between operators: key and value as the deserializers made them,
    event time in milliseconds."""

    key: Any
    value: Any
    timestamp: int


class Window(NamedTuple):
    """A window's bounds in milliseconds: start inclusive, end exclusive."""

    start: int
    end: int


class WindowedKey(NamedTuple):
    """The key of a windowed aggregate: the record key and its window."""

    key: Any
    window: Window


class WindowResult(NamedTuple):
    """What a windowed aggregation emits: the key, the window and the aggregate value."""

    key: Any
    window: Window
    value: Any


class KeyValueStore(abc.ABC):
    """A task's key-value state; keys and values are Python objects the store's serde can
    encode. Changes are remembered until `flush` writes them to the changelog topic, so the
    store can be rebuilt anywhere from the changelog alone."""

    name: str

    @abc.abstractmethod
    def get(self, key: Any, default: Any = None) -> Any: ...

    @abc.abstractmethod
    def put(self, key: Any, value: Any) -> None: ...

    @abc.abstractmethod
    def delete(self, key: Any) -> None: ...

    @abc.abstractmethod
    def items(self) -> Iterator[tuple[Any, Any]]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...


class TaskContext(Protocol):
    """What operators may ask of the task running them."""

    @property
    def application_id(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def stream_time(self) -> int:
        """The largest event timestamp seen so far by this task (-1 before the first)."""
        ...

    def wall_clock_ms(self) -> int:
        """Processing time; the test driver controls it."""
        ...

    def store(self, name: str) -> KeyValueStore:
        """The task's store called `name` (created on first use, restored before processing)."""
        ...

    def late(self, operator: str, record: Record) -> None:
        """Count a late record and route it to the operator's late-record output, if any."""
        ...


__all__ = [
    "KeyValueStore",
    "Record",
    "TaskContext",
    "Window",
    "WindowResult",
    "WindowedKey",
]

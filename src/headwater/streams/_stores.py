"""State stores: what an operator keeps per task partition, and what goes to the changelog.

Every store is a `KeyValueStore` (the shared model) that also remembers what changed since the
last commit, so the runtime can write exactly those entries to the store's changelog topic
(`<application_id>-<store name>-changelog`) and rebuild the store anywhere from that topic:

    entries = store.changes()        # [(key, value), ...]; value None is a deletion
    producer.send_many(changelog, ...); store.mark_committed()
    fresh.restore(entries)           # on another machine, before processing

A None value is never stored: `put(key, None)` deletes, as a tombstone does in Kafka.

The in-memory stores here are the working set the operators touch on the hot path (plain dicts,
no call per record). The RocksDB stores (`_rocksdb`, through `rocksdict`) stand in for them
behind the same interface and attributes: a bounded cache in front of RocksDB for key-value
stores, the open windows written to disk at each commit for window stores. A task closes its
stores (`close()`) when it is done with them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from headwater.streams._model import KeyValueStore, Record, Window, WindowResult


class ChangeloggedStore(KeyValueStore):
    """A store that tracks its changes for the changelog and can be rebuilt from it.

    Thread-safety: owned by one task, driven by one thread at a time.
    """

    changelog_topic: str = ""

    @abc.abstractmethod
    def changes(self) -> list[tuple[Any, Any]]:
        """Entries changed since the last `mark_committed`, in a deterministic order; a None
        value means the key was deleted."""

    @abc.abstractmethod
    def mark_committed(self) -> None:
        """Forget the changes: they are in the changelog now."""

    @abc.abstractmethod
    def restore(self, entries: Iterable[tuple[Any, Any]]) -> None:
        """Apply changelog entries in order (None deletes); restoring is not a change."""

    def close(self) -> None:
        """Release what the store holds outside Python memory (files, locks); nothing here."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} entries={len(self)}>"


class InMemoryKeyValueStore(ChangeloggedStore):
    """Key -> value in a dict; changed keys kept in insertion order (a dict used as a set), so
    the changelog order is the order of the first change.

    Thread-safety: owned by one task, driven by one thread at a time.
    """

    __slots__ = ("data", "dirty", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict[Any, Any] = {}
        self.dirty: dict[Any, None] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def put(self, key: Any, value: Any) -> None:
        if value is None:
            self.delete(key)
            return
        self.data[key] = value
        self.dirty[key] = None

    def delete(self, key: Any) -> None:
        self.data.pop(key, None)
        self.dirty[key] = None

    def items(self) -> Iterator[tuple[Any, Any]]:
        return iter(list(self.data.items()))

    def __len__(self) -> int:
        return len(self.data)

    def changes(self) -> list[tuple[Any, Any]]:
        data = self.data
        return [(key, data.get(key)) for key in self.dirty]

    def mark_committed(self) -> None:
        self.dirty.clear()

    def restore(self, entries: Iterable[tuple[Any, Any]]) -> None:
        data = self.data
        for key, value in entries:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value


class InMemoryWindowStore(ChangeloggedStore):
    """Aggregates of fixed time windows, keyed `(key, window start)`, held as one dict per window
    start so a closing window is popped whole and the hot loop touches one small dict.

    Change tracking is per window, not per record: a window touched since the last commit has
    all its entries written (an upsert of an unchanged entry is harmless), which keeps the
    per-record cost at zero. A closed window is dropped without tombstones, as Kafka's window
    stores are: the changelog topic's retention (`compact,delete`, `StoreSpec.retention_ms`)
    ages it out, and a restored task discards windows its stream time has already closed.

    Thread-safety: owned by one task, driven by one thread at a time.
    """

    __slots__ = ("buckets", "name", "removed", "touched")

    def __init__(self, name: str) -> None:
        self.name = name
        self.buckets: dict[int, dict[Any, Any]] = {}
        self.touched: set[int] = set()  # window starts changed since the last commit
        self.removed: list[tuple[int, list[Any]]] = []  # (start, keys) deleted since then

    def get(self, key: Any, default: Any = None) -> Any:
        record_key, start = key
        bucket = self.buckets.get(start)
        return default if bucket is None else bucket.get(record_key, default)

    def put(self, key: Any, value: Any) -> None:
        if value is None:
            self.delete(key)
            return
        record_key, start = key
        self.buckets.setdefault(start, {})[record_key] = value
        self.touched.add(start)

    def delete(self, key: Any) -> None:
        record_key, start = key
        bucket = self.buckets.get(start)
        if bucket is not None and record_key in bucket:
            del bucket[record_key]
            self.removed.append((start, [record_key]))
            if not bucket:
                del self.buckets[start]

    def drop(self, start: int) -> dict[Any, Any]:
        """Remove the closed window starting at `start` whole and return its entries (no
        tombstones: retention ages it out of the changelog)."""
        self.touched.discard(start)
        return self.buckets.pop(start)

    def items(self) -> Iterator[tuple[Any, Any]]:
        return iter(
            [
                ((key, start), value)
                for start in sorted(self.buckets)
                for key, value in self.buckets[start].items()
            ]
        )

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self.buckets.values())

    def changes(self) -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = [
            ((key, start), None) for start, keys in self.removed for key in keys
        ]
        buckets = self.buckets
        for start in sorted(self.touched):
            bucket = buckets.get(start)
            if bucket:
                out.extend(((key, start), value) for key, value in bucket.items())
        return out

    def mark_committed(self) -> None:
        self.touched.clear()
        self.removed.clear()

    def restore(self, entries: Iterable[tuple[Any, Any]]) -> None:
        buckets = self.buckets
        for (key, start), value in entries:
            if value is None:
                bucket = buckets.get(start)
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del buckets[start]
            else:
                buckets.setdefault(start, {})[key] = value


# --- bytes for changelog and repartition topics -------------------------------------------------

_TUPLE, _WINDOW, _WINDOW_RESULT, _RECORD, _PAIRS = 1, 2, 3, 4, 5
_TUPLE_KINDS: dict[type[Any], int] = {
    tuple: _TUPLE,
    Window: _WINDOW,
    WindowResult: _WINDOW_RESULT,
    Record: _RECORD,
}
_TUPLE_TYPES: dict[int, Any] = {_WINDOW: Window, _WINDOW_RESULT: WindowResult, _RECORD: Record}


class StateCodec:
    """Bytes for store entries and repartitioned records: msgpack, with tuples (and the model's
    named tuples) coming back as what they were, so a `(key, window start)` stays hashable.

    msgspec Structs and dataclasses come back as dicts; give the app a codec of your own for
    those (any object with `encode(obj) -> bytes` and `decode(bytes) -> obj`).
    Thread-safety: stateless after construction; share freely.
    """

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(ext_hook=self._ext)

    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(self._lower(obj))

    def decode(self, data: bytes) -> Any:
        return self._decoder.decode(data)

    def _lower(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in (str, int, float, bytes, bool) or obj is None:
            return obj
        code = _TUPLE_KINDS.get(kind)
        if code is not None:
            return msgspec.msgpack.Ext(
                code, self._encoder.encode([self._lower(item) for item in obj])
            )
        if kind is list:
            return [self._lower(item) for item in obj]
        if kind is dict:
            if any(type(key) in _TUPLE_KINDS for key in obj):  # Ext is unhashable: pairs
                pairs = [[self._lower(key), self._lower(value)] for key, value in obj.items()]
                return msgspec.msgpack.Ext(_PAIRS, self._encoder.encode(pairs))
            return {key: self._lower(value) for key, value in obj.items()}
        return obj

    def _ext(self, code: int, data: memoryview) -> Any:
        items = self._decoder.decode(data)
        if code == _TUPLE:
            return tuple(items)
        if code == _PAIRS:
            return {key: value for key, value in items}
        kind = _TUPLE_TYPES.get(code)
        if kind is None:
            raise ValueError(f"unknown state codec extension {code}")
        return kind(*items)


__all__ = [
    "ChangeloggedStore",
    "InMemoryKeyValueStore",
    "InMemoryWindowStore",
    "StateCodec",
]

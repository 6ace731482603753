"""RocksDB state stores (through `rocksdict`): state larger than memory that survives restarts.

The two stores here stand in for the in-memory ones behind the same interface and the same
attributes the operators' fast paths touch, so an operator never knows which it has:

`RocksDBKeyValueStore` (for `InMemoryKeyValueStore`)
    `data` is a bounded cache of decoded entries (`RocksDBOptions.cache_entries`) in front of
    RocksDB: a read that misses it loads the entry from disk; when it grows past its size, every
    entry changed since the last write goes to RocksDB in one batch and the oldest half of the
    cache is dropped (Kafka Streams' caching layer, with the cache counted in entries because a
    Python object's size is not knowable cheaply). So a store of millions of keys keeps only the
    cache in Python memory.
`RocksDBWindowStore` (for `InMemoryWindowStore`, tumbling and hopping windows)
    The open windows stay in Python dicts (the generated window loop writes into them; they are
    bounded by the keys active within size + grace); RocksDB keeps them across restarts.

Changelog semantics are the in-memory stores': `changes()` since `mark_committed()`, `restore
(entries)` is not a change, a None value deletes, keys and values are encoded with the topology
codec (tuples come back as tuples).

Local state and the changelog. At `mark_committed(changelog_offset)` everything changed goes to
RocksDB, then the file `checkpoint.json` beside the database records that the disk holds a
committed state (and, if the runtime gave it, the changelog offset it includes, readable as
`store.changelog_offset` after reopening: restore from there instead of from 0). Before an
eviction first writes uncommitted entries the file is removed, so a store reopened after a crash
in between starts empty and is restored from the changelog in full (Kafka Streams' exactly-once
rule): local state is never ahead of the changelog. Replaying the changelog over a committed
local state is harmless (each key ends at its last logged value), so a runtime that ignores the
offset is merely slower.

Layout: `<state_dir>/<application_id>/<task id>/<store>/` holds `rocksdb/` and
`checkpoint.json` (`state_directory`). A directory is owned by one open store: RocksDB's lock
makes a second open fail (`StreamsError`) until the first is closed.

Memory per store: `cache_entries` decoded entries + `write_buffer_bytes` x `max_write_buffers`
of memtables; the `block_cache_bytes` block cache is shared by every store opened with the same
`RocksDBOptions`.

Thread-safety: a store is owned by one task and driven by one thread at a time; a
`RocksDBOptions` may be shared by stores on any threads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import threading
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from headwater.streams._errors import StreamsError
from headwater.streams._stores import (
    ChangeloggedStore,
    InMemoryKeyValueStore,
    InMemoryWindowStore,
    StateCodec,
)

logger = logging.getLogger("headwater.streams")

MiB = 1024 * 1024
_CHECKPOINT = "checkpoint.json"
_DATABASE = "rocksdb"
_RESTORE_BATCH = 10_000  # entries per RocksDB write batch while restoring
_TOMBSTONE: Any = object()  # a cache value: deleted here, maybe not yet on disk
_WINDOW_BIAS = 2**63  # window starts are stored unsigned, so negative starts sort first too
_START = struct.Struct(">Q")
_POSITION = struct.Struct(">I")  # an entry's place in its window, so a reopened store keeps it


class RocksDBOptions:
    """How much memory RocksDB stores may use and how hard commits hold; every size says its
    unit. Immutable after construction; share one among many stores to share its block cache.
    """

    def __init__(
        self,
        *,
        cache_entries: int = 10_000,
        write_buffer_bytes: int = 4 * MiB,
        max_write_buffers: int = 2,
        block_cache_bytes: int = 16 * MiB,
        sync_commits: bool = True,
    ) -> None:
        for what, value, minimum in (
            ("cache_entries", cache_entries, 2),
            ("write_buffer_bytes", write_buffer_bytes, 64 * 1024),
            ("max_write_buffers", max_write_buffers, 1),
            ("block_cache_bytes", block_cache_bytes, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{what} must be an integer >= {minimum}, not {value!r}")
        self.cache_entries = cache_entries  # decoded entries a key-value store keeps in Python
        self.write_buffer_bytes = write_buffer_bytes  # one memtable
        self.max_write_buffers = max_write_buffers  # memtables per store, before stalling
        self.block_cache_bytes = block_cache_bytes  # shared by the stores using these options
        self.sync_commits = sync_commits  # fsync the WAL and checkpoint at each commit
        self._cache: Cache | None = None
        self._lock = threading.Lock()

    def rocksdb_options(self) -> Options:
        """rocksdict `Options` for one store (raw bytes keys and values)."""
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(self.write_buffer_bytes)
        options.set_max_write_buffer_number(self.max_write_buffers)
        options.set_keep_log_file_num(2)
        options.set_max_log_file_size(1 * MiB)
        table = BlockBasedOptions()
        if self.block_cache_bytes:
            with self._lock:
                if self._cache is None:
                    self._cache = Cache(self.block_cache_bytes)
                table.set_block_cache(self._cache)
        else:
            table.disable_cache()
        table.set_bloom_filter(10, False)  # misses (new keys) rarely touch the disk
        options.set_block_based_table_factory(table)
        return options

    def __repr__(self) -> str:
        return (
            f"RocksDBOptions(cache_entries={self.cache_entries}, "
            f"write_buffer_bytes={self.write_buffer_bytes}, "
            f"max_write_buffers={self.max_write_buffers}, "
            f"block_cache_bytes={self.block_cache_bytes}, sync_commits={self.sync_commits})"
        )


def state_directory(
    state_dir: str | os.PathLike[str], application_id: str, task_id: object, store: str
) -> Path:
    """Where a task's store keeps its files: `<state_dir>/<application_id>/<task id>/<store>`
    (a task id prints as `<sub-topology>_<partition>`)."""
    return Path(state_dir) / application_id / str(task_id) / store


def open_rocksdb_store(
    template: ChangeloggedStore,
    directory: str | os.PathLike[str],
    *,
    codec: Any = None,
    options: RocksDBOptions | None = None,
) -> ChangeloggedStore:
    """The RocksDB store that stands in for `template`, the empty in-memory store an operator
    made: a window store for a window store, a key-value store for a key-value store."""
    if isinstance(template, InMemoryWindowStore):
        window = RocksDBWindowStore(template.name, directory, codec=codec, options=options)
        window.changelog_topic = template.changelog_topic
        return window
    if isinstance(template, InMemoryKeyValueStore):
        store = RocksDBKeyValueStore(template.name, directory, codec=codec, options=options)
        store.changelog_topic = template.changelog_topic
        return store
    raise TypeError(f"no RocksDB store stands in for {type(template).__name__}")


class _Local:
    """One store's database and checkpoint file: opening (wiping an unclean state), writing
    the checkpoint, closing. Thread-safety: one thread at a time."""

    def __init__(
        self, name: str, directory: str | os.PathLike[str], options: RocksDBOptions
    ) -> None:
        self.directory = Path(directory)
        self.sync = options.sync_commits
        self.checkpoint_path = self.directory / _CHECKPOINT
        path = self.directory / _DATABASE
        self.directory.mkdir(parents=True, exist_ok=True)
        self.changelog_offset: int | None = None
        self.clean = False
        self.open = False
        recorded: dict[str, Any] | None = None
        try:
            found = json.loads(self.checkpoint_path.read_text())
        except FileNotFoundError:
            pass
        except ValueError:
            logger.warning("store %s: unreadable %s, starting empty", name, self.checkpoint_path)
        else:
            if isinstance(found, dict) and path.exists():  # no database: nothing it covers
                recorded = found
        if recorded is None and path.exists():
            # Uncommitted entries reached the disk and the process stopped before committing:
            # the changelog, not this copy, is the truth.
            logger.warning(
                "store %s: %s was not committed cleanly; starting empty (restore from the "
                "changelog)",
                name,
                path,
            )
            shutil.rmtree(path)
        try:
            self.db = Rdict(str(path), options.rocksdb_options())
        except Exception as exc:
            raise StreamsError(
                f"cannot open store {name!r} at {path}: {exc} (is another instance of this "
                "task open on the same state directory? close it or give each its own)"
            ) from exc
        self.open = True
        if recorded is None:
            self.write_checkpoint(None)  # empty is a committed state too
        else:
            offset = recorded.get("changelog_offset")
            self.changelog_offset = offset if isinstance(offset, int) else None
            self.clean = True

    def write_checkpoint(self, changelog_offset: int | None) -> None:
        """The disk holds a committed state (including the changelog up to
        `changelog_offset`, exclusive, when known)."""
        if self.sync:
            self.db.flush_wal(True)
        if changelog_offset is not None:
            self.changelog_offset = changelog_offset
        body = json.dumps({"version": 1, "changelog_offset": self.changelog_offset})
        temporary = self.checkpoint_path.with_suffix(".tmp")
        with open(temporary, "w") as file:
            file.write(body)
            if self.sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, self.checkpoint_path)
        self.clean = True

    def dirty_disk(self) -> None:
        """Uncommitted entries are about to reach the disk: it no longer holds a committed
        state until the next checkpoint."""
        if self.clean:
            self.checkpoint_path.unlink(missing_ok=True)
            self.clean = False

    def close(self) -> None:
        if self.open:
            self.open = False
            self.db.close()


class _Cache(dict[Any, Any]):
    """The decoded working set of a `RocksDBKeyValueStore`, and its `data`: `get`, `[]`, `in`
    fall through to RocksDB on a miss; `[]=` counts as a change to write. `len()` and iteration
    see the cache only. Thread-safety: the owning store's."""

    __slots__ = ("_store",)

    def __init__(self, store: RocksDBKeyValueStore) -> None:
        super().__init__()
        self._store = store

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            value = dict.__getitem__(self, key)
        except KeyError:
            value = self._store._load(key)
        return default if value is _TOMBSTONE else value

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _TOMBSTONE)
        if value is _TOMBSTONE:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _TOMBSTONE) is not _TOMBSTONE

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, value)
        store = self._store
        store._unflushed[key] = None
        if dict.__len__(self) > store._capacity:
            store._evict()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("change a RocksDB store through put/delete (or data[key] = value)")

    pop = setdefault = update = popitem = clear = __delitem__ = _refuse


class RocksDBKeyValueStore(InMemoryKeyValueStore):
    """Key -> value in RocksDB behind a bounded cache of decoded entries (`data`); changes
    tracked for the changelog as in the in-memory store, in the order of their first change.
    `len()` and `items()` read the whole database (O(n)); `items()` yields lazily.

    Thread-safety: owned by one task, driven by one thread at a time.
    """

    def __init__(
        self,
        name: str,
        directory: str | os.PathLike[str],
        *,
        codec: Any = None,
        options: RocksDBOptions | None = None,
    ) -> None:
        options = options if options is not None else RocksDBOptions()
        self.name = name
        self.dirty: dict[Any, None] = {}  # changed since the last commit, first change first
        self._unflushed: dict[Any, None] = {}  # cached entries newer than the disk's
        self._capacity = options.cache_entries
        codec = codec if codec is not None else StateCodec()
        self._encode = codec.encode
        self._decode = codec.decode
        self.data = _Cache(self)
        self._local = _Local(name, directory, options)
        self._db = self._local.db

    @property
    def directory(self) -> Path:
        return self._local.directory

    @property
    def changelog_offset(self) -> int | None:
        """The changelog offset the local state includes (restore from it), None: unknown."""
        return self._local.changelog_offset

    # --- the cache ----------------------------------------------------------------------------

    def _load(self, key: Any) -> Any:
        """`key`'s value from disk (cached), or _TOMBSTONE."""
        raw = self._db.get(self._encode(key))
        if raw is None:
            return _TOMBSTONE
        value = self._decode(raw)
        cache = self.data
        dict.__setitem__(cache, key, value)
        if dict.__len__(cache) > self._capacity:
            self._evict()
        return value

    def _peek(self, key: Any) -> Any:
        """`key`'s value or _TOMBSTONE, without caching it."""
        value = dict.get(self.data, key, _MISSING)
        if value is not _MISSING:
            return value
        raw = self._db.get(self._encode(key))
        return _TOMBSTONE if raw is None else self._decode(raw)

    def _flush(self, *, committing: bool) -> None:
        """Write the cached entries newer than the disk's in one batch."""
        unflushed = self._unflushed
        if not unflushed:
            return
        if not committing:
            self._local.dirty_disk()
        encode = self._encode
        cache = self.data
        batch = WriteBatch(raw_mode=True)
        for key in unflushed:
            value = dict.__getitem__(cache, key)
            if value is _TOMBSTONE:
                batch.delete(encode(key))
            else:
                batch.put(encode(key), encode(value))
        self._db.write(batch)
        unflushed.clear()

    def _evict(self) -> None:
        """Write what changed, then drop the oldest half of the cache."""
        self._flush(committing=False)
        cache = self.data
        drop = dict.__len__(cache) - self._capacity // 2
        for key in list(islice(dict.__iter__(cache), drop)):
            dict.__delitem__(cache, key)

    # --- KeyValueStore ------------------------------------------------------------------------

    def delete(self, key: Any) -> None:
        self.data[key] = _TOMBSTONE
        self.dirty[key] = None

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every entry, in RocksDB's (encoded key) order, then keys not yet on disk; lazily,
        from a consistent view: changing the store while iterating is safe."""
        encode, decode = self._encode, self._decode
        cache = self.data
        pending = {encode(key): (key, dict.__getitem__(cache, key)) for key in self._unflushed}
        on_disk = self._db.items()  # a RocksDB iterator reads from an implicit snapshot
        return self._merged(on_disk, pending, decode)

    @staticmethod
    def _merged(
        on_disk: Iterator[tuple[Any, Any]],
        pending: dict[bytes, tuple[Any, Any]],
        decode: Any,
    ) -> Iterator[tuple[Any, Any]]:
        for raw_key, raw_value in on_disk:
            newer = pending.pop(raw_key, None)
            if newer is None:
                yield decode(raw_key), decode(raw_value)
            elif newer[1] is not _TOMBSTONE:
                yield newer
        for key, value in pending.values():
            if value is not _TOMBSTONE:
                yield key, value

    def __len__(self) -> int:
        count = sum(1 for _ in self._db.keys())  # noqa: SIM118 (Rdict is not iterable)
        cache, db, encode = self.data, self._db, self._encode
        for key in self._unflushed:
            count += dict.__getitem__(cache, key) is not _TOMBSTONE
            count -= db.get(encode(key)) is not None
        return count

    # --- ChangeloggedStore --------------------------------------------------------------------

    def changes(self) -> list[tuple[Any, Any]]:
        peek = self._peek
        out = []
        for key in self.dirty:
            value = peek(key)
            out.append((key, None if value is _TOMBSTONE else value))
        return out

    def mark_committed(self, changelog_offset: int | None = None) -> None:
        """The changes are in the changelog (up to `changelog_offset`, exclusive, if given):
        write them to disk and record that the disk holds a committed state."""
        flushed = bool(self._unflushed)
        self._flush(committing=True)
        self.dirty.clear()
        if flushed or changelog_offset is not None or not self._local.clean:
            self._local.write_checkpoint(changelog_offset)

    def restore(self, entries: Iterable[tuple[Any, Any]]) -> None:
        """Apply changelog entries in order straight to disk, in batches (not a change)."""
        encode = self._encode
        cache, unflushed, db = self.data, self._unflushed, self._db
        batch = WriteBatch(raw_mode=True)
        for key, value in entries:
            if value is None:
                batch.delete(encode(key))
            else:
                batch.put(encode(key), encode(value))
            dict.pop(cache, key, None)
            unflushed.pop(key, None)
            if len(batch) >= _RESTORE_BATCH:
                db.write(batch)
                batch = WriteBatch(raw_mode=True)
        if len(batch):
            db.write(batch)

    def close(self) -> None:
        """Close the database; changes not committed are not written (the changelog has not
        got them either). Idempotent."""
        self._local.close()

    def __enter__(self) -> RocksDBKeyValueStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_MISSING: Any = object()


class RocksDBWindowStore(InMemoryWindowStore):
    """Fixed windows' aggregates: open windows in dicts (as `InMemoryWindowStore`), persisted
    to RocksDB at each commit keyed `<window start, 8 bytes big-endian> <encoded key>`, so a
    closed window is one range delete and a reopened store loads its open windows from disk.
    A value on disk starts with the entry's position in its window: a window emits its keys in
    the order they came, and a reopened store must too.

    Thread-safety: owned by one task, driven by one thread at a time.
    """

    def __init__(
        self,
        name: str,
        directory: str | os.PathLike[str],
        *,
        codec: Any = None,
        options: RocksDBOptions | None = None,
    ) -> None:
        super().__init__(name)
        options = options if options is not None else RocksDBOptions()
        codec = codec if codec is not None else StateCodec()
        self._encode = codec.encode
        self._decode = codec.decode
        self._dropped: list[int] = []  # window starts closed since the last commit
        self._local = _Local(name, directory, options)
        self._db = self._local.db
        decode = self._decode
        loaded: dict[int, list[tuple[int, bytes, bytes]]] = {}
        for raw_key, raw_value in self._db.items():
            assert isinstance(raw_key, bytes) and isinstance(raw_value, bytes)  # raw mode
            start = _START.unpack_from(raw_key)[0] - _WINDOW_BIAS
            position = _POSITION.unpack_from(raw_value)[0]
            loaded.setdefault(start, []).append((position, raw_key, raw_value))
        for start, entries in loaded.items():
            entries.sort()
            self.buckets[start] = {decode(k[8:]): decode(v[4:]) for _, k, v in entries}

    @property
    def directory(self) -> Path:
        return self._local.directory

    @property
    def changelog_offset(self) -> int | None:
        """The changelog offset the local state includes (restore from it), None: unknown."""
        return self._local.changelog_offset

    def _raw_key(self, key: Any, start: int) -> bytes:
        encoded: bytes = self._encode(key)
        return _START.pack(start + _WINDOW_BIAS) + encoded

    def drop(self, start: int) -> dict[Any, Any]:
        self._dropped.append(start)
        return super().drop(start)

    def mark_committed(self, changelog_offset: int | None = None) -> None:
        """Write the windows touched, dropped and deleted since the last commit, then record
        that the disk holds a committed state."""
        encode = self._encode
        batch = WriteBatch(raw_mode=True)
        for start in self._dropped:  # deletions first: a window may be refilled since
            batch.delete_range(
                _START.pack(start + _WINDOW_BIAS), _START.pack(start + 1 + _WINDOW_BIAS)
            )
        for start, keys in self.removed:
            for key in keys:
                batch.delete(self._raw_key(key, start))
        buckets = self.buckets
        position = _POSITION.pack
        for start in sorted(self.touched):
            prefix = _START.pack(start + _WINDOW_BIAS)
            for i, (key, value) in enumerate(buckets.get(start, {}).items()):
                batch.put(prefix + encode(key), position(i) + encode(value))
        changed = len(batch) > 0
        if changed:
            self._db.write(batch)
        super().mark_committed()
        self._dropped.clear()
        if changed or changelog_offset is not None:
            self._local.write_checkpoint(changelog_offset)

    def restore(self, entries: Iterable[tuple[Any, Any]]) -> None:
        """Apply changelog entries to the open windows, then write the windows they touched
        whole (positions and all) to disk (not a change)."""
        buckets, db = self.buckets, self._db
        batch = WriteBatch(raw_mode=True)
        restored: set[int] = set()
        for (key, start), value in entries:
            if value is None:
                bucket = buckets.get(start)
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del buckets[start]
                batch.delete(self._raw_key(key, start))
            else:
                buckets.setdefault(start, {})[key] = value
                restored.add(start)
            if len(batch) >= _RESTORE_BATCH:
                db.write(batch)
                batch = WriteBatch(raw_mode=True)
        encode, position = self._encode, _POSITION.pack
        for start in sorted(restored):
            prefix = _START.pack(start + _WINDOW_BIAS)
            for i, (key, value) in enumerate(buckets.get(start, {}).items()):
                batch.put(prefix + encode(key), position(i) + encode(value))
            if len(batch) >= _RESTORE_BATCH:
                db.write(batch)
                batch = WriteBatch(raw_mode=True)
        if len(batch):
            db.write(batch)

    def close(self) -> None:
        """Close the database; changes not committed are not written. Idempotent."""
        self._local.close()

    def __enter__(self) -> RocksDBWindowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "RocksDBKeyValueStore",
    "RocksDBOptions",
    "RocksDBWindowStore",
    "open_rocksdb_store",
    "state_directory",
]

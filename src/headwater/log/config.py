"""Topic configuration: Kafka's key names, validated, with Headwater's documented defaults.

`TopicConfig` holds the resolved values; only the overrides a user set are persisted, so a
changed default reaches every topic that did not choose its own value (as in Kafka).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from headwater import limits
from headwater.errors import ConfigError

# Kafka's "never" for flush.messages / flush.ms: leave flushing to the operating system.
FLUSH_NEVER = 2**63 - 1

CLEANUP_POLICIES = frozenset({"delete", "compact", "compact,delete", "delete,compact"})
TIMESTAMP_TYPES = frozenset({"CreateTime", "LogAppendTime"})
COMPRESSION_TYPES = frozenset({"producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"})


def _integer(minimum: int, maximum: int = 2**63 - 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return parse


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _choice(choices: frozenset[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(sorted(choices))}")
        return text

    return parse


@dataclass(frozen=True, slots=True)
class _Key:
    name: str
    attribute: str
    parse: Callable[[str], Any]
    doc: str


# The keys a topic accepts. The defaults are Kafka's except `flush.messages`: a single node has
# no replicas to fall back on, so Headwater fsyncs every append (group committed) unless told not to.
_KEYS: tuple[_Key, ...] = (
    _Key(
        "cleanup.policy",
        "cleanup_policy",
        _choice(CLEANUP_POLICIES),
        "delete old segments, compact by key, or both",
    ),
    _Key(
        "compression.type",
        "compression_type",
        _choice(COMPRESSION_TYPES),
        "codec for batches the embedded API builds; 'producer' keeps what clients send",
    ),
    _Key(
        "delete.retention.ms",
        "delete_retention_ms",
        _integer(0),
        "how long a compacted topic keeps tombstones",
    ),
    _Key(
        "file.delete.delay.ms",
        "file_delete_delay_ms",
        _integer(0),
        "how long a deleted segment's file stays open for readers already using it",
    ),
    _Key(
        "flush.messages",
        "flush_messages",
        _integer(1),
        "fsync after this many messages (1: every append, group committed)",
    ),
    _Key("flush.ms", "flush_ms", _integer(0), "fsync when the oldest unflushed append is this old"),
    _Key(
        "index.interval.bytes",
        "index_interval_bytes",
        _integer(0),
        "log bytes between two sparse index entries",
    ),
    _Key(
        "max.message.bytes",
        "max_message_bytes",
        _integer(0, limits.BATCH_BYTES_MAX),
        "largest record batch accepted",
    ),
    _Key(
        "message.timestamp.type",
        "message_timestamp_type",
        _choice(TIMESTAMP_TYPES),
        "keep the producer's timestamps or stamp append time",
    ),
    _Key(
        "min.cleanable.dirty.ratio",
        "min_cleanable_dirty_ratio",
        _ratio,
        "dirty share of a compacted log that triggers cleaning",
    ),
    _Key(
        "min.compaction.lag.ms",
        "min_compaction_lag_ms",
        _integer(0),
        "records younger than this are never compacted",
    ),
    _Key(
        "min.insync.replicas",
        "min_insync_replicas",
        _integer(1),
        "accepted for Kafka compatibility; a single node is its own in-sync replica",
    ),
    _Key(
        "retention.bytes",
        "retention_bytes",
        _integer(-1),
        "delete oldest segments beyond this size (-1: unbounded)",
    ),
    _Key(
        "retention.ms",
        "retention_ms",
        _integer(-1),
        "delete segments whose newest record is older (-1: forever)",
    ),
    _Key(
        "segment.bytes",
        "segment_bytes",
        _integer(limits.SEGMENT_BYTES_MIN, limits.SEGMENT_BYTES_MAX),
        "roll to a new segment at this size",
    ),
    _Key("segment.ms", "segment_ms", _integer(1), "roll to a new segment at this age"),
)
KEYS_BY_NAME: Mapping[str, _Key] = {key.name: key for key in _KEYS}


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """Resolved, validated topic configuration. Immutable: altering makes a new one."""

    overrides: Mapping[str, str] = field(default_factory=dict)
    cleanup_policy: str = "delete"
    compression_type: str = "producer"
    delete_retention_ms: int = limits.DELETE_RETENTION_MS_DEFAULT
    file_delete_delay_ms: int = 60_000
    flush_messages: int = 1
    flush_ms: int = FLUSH_NEVER
    index_interval_bytes: int = limits.INDEX_INTERVAL_BYTES_DEFAULT
    max_message_bytes: int = limits.MESSAGE_BYTES_MAX_DEFAULT
    message_timestamp_type: str = "CreateTime"
    min_cleanable_dirty_ratio: float = limits.MIN_CLEANABLE_DIRTY_RATIO_DEFAULT
    min_compaction_lag_ms: int = 0
    min_insync_replicas: int = 1
    retention_bytes: int = limits.RETENTION_BYTES_DEFAULT
    retention_ms: int = limits.RETENTION_MS_DEFAULT
    segment_bytes: int = limits.SEGMENT_BYTES_DEFAULT
    segment_ms: int = limits.SEGMENT_MS_DEFAULT

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, str] | None = None) -> TopicConfig:
        """Validate `overrides` (Kafka key names, string values); raise `ConfigError` naming the key."""
        values: dict[str, Any] = {}
        clean: dict[str, str] = {}
        for name, raw in (overrides or {}).items():
            key = KEYS_BY_NAME.get(name)
            if key is None:
                raise ConfigError(f"unknown topic config {name!r}")
            text = str(raw).strip()
            try:
                values[key.attribute] = key.parse(text)
            except ValueError as error:
                raise ConfigError(
                    f"invalid value {raw!r} for topic config {name!r}: {error}"
                ) from None
            clean[name] = text
        return cls(overrides=clean, **values)

    def altered(self, changes: Mapping[str, str | None]) -> TopicConfig:
        """Return a config with `changes` applied; a value of None restores the default."""
        merged = dict(self.overrides)
        for name, value in changes.items():
            if value is None:
                if name not in KEYS_BY_NAME:
                    raise ConfigError(f"unknown topic config {name!r}")
                merged.pop(name, None)
            else:
                merged[name] = value
        return TopicConfig.from_overrides(merged)

    def describe(self) -> list[tuple[str, str, bool, str]]:
        """Every key as (name, value, is_default, documentation), sorted by name."""
        rows = []
        for key in _KEYS:
            value = getattr(self, key.attribute)
            rows.append((key.name, str(value), key.name not in self.overrides, key.doc))
        return rows

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy

    @property
    def flush_every_append(self) -> bool:
        return self.flush_messages == 1


__all__ = ["FLUSH_NEVER", "KEYS_BY_NAME", "TopicConfig"]

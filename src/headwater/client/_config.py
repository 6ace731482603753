"""Client configuration: Kafka's key names, checked once, the same on every backend.

A key is written as Kafka writes it (`enable.auto.commit`) or as a Python keyword with
underscores (`enable_auto_commit=False`). Values may be Python values or Kafka's strings
("true", "500"). An unknown key, a key that belongs to another role, or a bad value raises
`ConfigError` naming the key, before anything connects. Keys starting with `librdkafka.` pass
through to the Kafka backend untouched (and are ignored by the embedded one), for the tuning
knobs only librdkafka has.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from headwater.errors import ConfigError

PASSTHROUGH_PREFIX = "librdkafka."


class Role(enum.Enum):
    PRODUCER = "producer"
    CONSUMER = "consumer"
    ADMIN = "admin"


Parser = Callable[[str, Any], Any]


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"config {key!r} must be true or false, not {value!r}")


def _integer(low: int, high: int = 2**63 - 1) -> Parser:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"config {key!r} must be an integer, not {value!r}")
        try:
            number = int(value.strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config {key!r} must be an integer, not {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"config {key!r} must be between {low} and {high}, not {value!r}")
        return number

    return parse


def _choice(*choices: str) -> Parser:
    def parse(key: str, value: Any) -> str:
        text = str(value).strip().lower() if not isinstance(value, bool) else ""
        if text not in choices:
            raise ConfigError(f"config {key!r} must be one of {', '.join(choices)}, not {value!r}")
        return text

    return parse


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"config {key!r} must be a non-empty string, not {value!r}")
    return value.strip()


def _acks(key: str, value: Any) -> int:
    """Kafka's `acks`: 0, 1, or all (-1); returned as an int."""
    text = str(value).strip().lower()
    if text in ("all", "-1"):
        return -1
    if text in ("0", "1") and not isinstance(value, bool):
        return int(text)
    raise ConfigError(f"config {key!r} must be 0, 1 or all, not {value!r}")


ASSIGNORS = ("range", "roundrobin", "cooperative-sticky")


def _assignors(key: str, value: Any) -> tuple[str, ...]:
    """Kafka's `partition.assignment.strategy`: a comma-separated list (or a list)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip().lower() for item in items if str(item).strip())
    if not names or any(name not in ASSIGNORS for name in names):
        raise ConfigError(f"config {key!r} must list assignors from {', '.join(ASSIGNORS)}")
    if "cooperative-sticky" in names and len(names) > 1:
        raise ConfigError(f"config {key!r} cannot mix cooperative-sticky with eager assignors")
    return names


@dataclass(frozen=True, slots=True)
class Key:
    parse: Parser
    default: Any
    roles: frozenset[Role]


_P = frozenset({Role.PRODUCER})
_C = frozenset({Role.CONSUMER})
_ALL = frozenset(Role)

# Defaults are Kafka's (the Java client's) unless a comment says otherwise.
KEYS: dict[str, Key] = {
    "client.id": Key(_text, "headwater", _ALL),
    "request.timeout.ms": Key(_integer(1), 30_000, _ALL),
    # producer
    "acks": Key(_acks, -1, _P),
    "enable.idempotence": Key(_boolean, True, _P),
    "linger.ms": Key(_integer(0, 900_000), 5, _P),
    "batch.size": Key(_integer(1, 2**31 - 1), 16_384, _P),
    "compression.type": Key(_choice("none", "gzip", "snappy", "lz4", "zstd"), "none", _P),
    "delivery.timeout.ms": Key(_integer(1), 120_000, _P),
    "max.in.flight.requests.per.connection": Key(_integer(1, 1_000_000), 5, _P),
    "retries": Key(_integer(0, 2**31 - 1), 2**31 - 1, _P),
    "max.request.size": Key(_integer(1, 2**31 - 1), 1_048_576, _P),
    "buffer.memory": Key(_integer(1), 32 * 1024 * 1024, _P),
    # consumer
    "group.id": Key(_text, None, _C),
    "group.instance.id": Key(_text, None, _C),
    "auto.offset.reset": Key(_choice("earliest", "latest", "none"), "latest", _C),
    "enable.auto.commit": Key(_boolean, True, _C),
    "auto.commit.interval.ms": Key(_integer(0), 5_000, _C),
    "isolation.level": Key(_choice("read_uncommitted", "read_committed"), "read_uncommitted", _C),
    # Kafka 3.0+ consumers default to 45 s.
    "session.timeout.ms": Key(_integer(1), 45_000, _C),
    "heartbeat.interval.ms": Key(_integer(1), 3_000, _C),
    "max.poll.interval.ms": Key(_integer(1), 300_000, _C),
    "max.poll.records": Key(_integer(1, 1_000_000), 500, _C),
    # Kafka's default lists range first (then cooperative-sticky): range is what runs.
    "partition.assignment.strategy": Key(_assignors, ("range",), _C),
    "fetch.min.bytes": Key(_integer(1), 1, _C),
    "fetch.max.bytes": Key(_integer(1), 52_428_800, _C),
    "fetch.max.wait.ms": Key(_integer(0), 500, _C),
    "max.partition.fetch.bytes": Key(_integer(1), 1_048_576, _C),
    "check.crcs": Key(_boolean, True, _C),
}

# Keys only one backend can honour, refused where they cannot be.
KAFKA_ONLY = frozenset({"bootstrap.servers"})


def normalize_key(key: str) -> str:
    """`enable_auto_commit` -> `enable.auto.commit`; Kafka's dotted names stay as they are."""
    if key.startswith(PASSTHROUGH_PREFIX):
        return key
    return key.replace("_", ".")


def parse_config(role: Role, *sources: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge `sources` (later wins) and check every key; returns canonical keys to values.

    Unset keys are absent (not defaulted): backends apply `KEYS[key].default` themselves, so
    a Kafka backend can leave librdkafka's own defaults where they agree.
    """
    merged: dict[str, Any] = {}
    for source in sources:
        for raw, value in (source or {}).items():
            key = normalize_key(str(raw))
            if key.startswith(PASSTHROUGH_PREFIX):
                if len(key) == len(PASSTHROUGH_PREFIX):
                    raise ConfigError(f"config {raw!r} names no librdkafka key")
                merged[key] = value
                continue
            spec = KEYS.get(key)
            if spec is None:
                if key in KAFKA_ONLY:
                    raise ConfigError(
                        f"config {key!r} belongs in the connection URL (kafka://host:port)"
                    )
                raise ConfigError(f"unknown {role.value} config {key!r}")
            if role not in spec.roles:
                owners = " or ".join(sorted(r.value for r in spec.roles))
                raise ConfigError(f"config {key!r} is a {owners} config, not a {role.value} one")
            if value is None:
                merged.pop(key, None)
                continue
            merged[key] = spec.parse(key, value)
    if merged.get("enable.idempotence") and merged.get("acks", -1) != -1:
        raise ConfigError("config 'enable.idempotence' needs 'acks' all (-1)")
    return merged


def setting(config: Mapping[str, Any], key: str) -> Any:
    """The configured value of `key`, else its default."""
    return config[key] if key in config else KEYS[key].default


__all__ = [
    "ASSIGNORS",
    "KEYS",
    "PASSTHROUGH_PREFIX",
    "Role",
    "normalize_key",
    "parse_config",
    "setting",
]

"""Broker settings, with Kafka's names in the comments where one exists."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from headwater import limits
from headwater.coordinator.group import CoordinatorConfig
from headwater.errors import ConfigError
from headwater.protocol.connection import FRAME_BYTES_MAX_DEFAULT, IN_FLIGHT_REQUESTS_MAX_DEFAULT

# Open connections at once (Kafka: max.connections); each holds a bounded buffer.
CONNECTIONS_MAX_DEFAULT = 1_000


def parse_address(text: str, *, default_port: int = 9092) -> tuple[str, int]:
    """'HOST:PORT', 'HOST' or ':PORT' -> (host, port); raises ConfigError naming the text."""
    host, separator, port_text = text.rpartition(":")
    if not separator:
        host, port_text = text, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"invalid address {text!r}: the port is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid address {text!r}: port out of range")
    return host, port


# Kafka's broker setting -> (CoordinatorConfig field, multiplier to its unit).
_COORDINATOR_SETTINGS = {
    "group.initial.rebalance.delay.ms": ("initial_rebalance_delay_ms", 1),
    "group.min.session.timeout.ms": ("session_timeout_ms_min", 1),
    "group.max.session.timeout.ms": ("session_timeout_ms_max", 1),
    "group.max.size": ("group_members_max", 1),
    "offset.metadata.max.bytes": ("offset_metadata_bytes_max", 1),
    "offsets.retention.minutes": ("offsets_retention_ms", 60_000),
    # Not Kafka's (it has minutes only): the same in milliseconds, for tests and demos.
    "offsets.retention.ms": ("offsets_retention_ms", 1),
    "offsets.retention.check.interval.ms": ("offsets_retention_check_interval_ms", 1),
}
# The log's one setting here (the rest are the topics' own, by Kafka's topic config names).
_RETENTION_CHECK_INTERVAL = "log.retention.check.interval.ms"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    data_dir: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 9092
    advertised_host: str | None = None  # advertised.listeners; default: the listen address
    advertised_port: int | None = None
    node_id: int = 1  # node.id
    cluster_id: str = field(default_factory=lambda: uuid.uuid4().hex[:22])
    auto_create_topics: bool = True  # auto.create.topics.enable
    default_partitions: int = 1  # num.partitions
    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT  # socket.request.max.bytes
    in_flight_max: int = IN_FLIGHT_REQUESTS_MAX_DEFAULT
    connections_max: int = CONNECTIONS_MAX_DEFAULT  # max.connections
    # group.* and offsets.* settings, by Kafka's names through `with_settings`.
    group_coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    # log.retention.check.interval.ms
    retention_check_interval_ms: int = limits.RETENTION_CHECK_INTERVAL_MS

    def __post_init__(self) -> None:
        if self.default_partitions < 1:
            raise ConfigError("num.partitions must be at least 1")
        if self.connections_max < 1 or self.in_flight_max < 1 or self.frame_bytes_max < 1024:
            raise ConfigError("connection bounds must be positive (frames at least 1 KiB)")

    def with_settings(self, settings: Mapping[str, str]) -> BrokerConfig:
        """This config with broker settings given by Kafka's names (`headwater serve -c`)."""
        coordinator: dict[str, int] = {}
        retention_check_interval_ms = self.retention_check_interval_ms
        for key, text in settings.items():
            field_name, scale = _COORDINATOR_SETTINGS.get(key, (None, 0))
            if field_name is None and key != _RETENTION_CHECK_INTERVAL:
                known = ", ".join(sorted([*_COORDINATOR_SETTINGS, _RETENTION_CHECK_INTERVAL]))
                raise ConfigError(f"unknown broker setting {key!r} (known: {known})")
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(
                    f"broker setting {key!r} must be an integer, not {text!r}"
                ) from None
            if value < 0:
                raise ConfigError(f"broker setting {key!r} must not be negative")
            if field_name is None:
                retention_check_interval_ms = value
            else:
                coordinator[field_name] = value * scale
        if retention_check_interval_ms < 1:
            raise ConfigError(f"{_RETENTION_CHECK_INTERVAL} must be positive")
        group = dataclasses.replace(self.group_coordinator, **coordinator)
        if group.session_timeout_ms_min > group.session_timeout_ms_max:
            raise ConfigError("group.min.session.timeout.ms exceeds group.max.session.timeout.ms")
        if group.offsets_retention_check_interval_ms < 1:
            raise ConfigError("offsets.retention.check.interval.ms must be positive")
        return dataclasses.replace(
            self,
            group_coordinator=group,
            retention_check_interval_ms=retention_check_interval_ms,
        )

    @property
    def advertised(self) -> tuple[str, int]:
        return (
            self.advertised_host or self.listen_host,
            self.advertised_port if self.advertised_port is not None else self.listen_port,
        )


__all__ = ["BrokerConfig", "parse_address"]

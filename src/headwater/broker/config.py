"""Broker settings, with Kafka's names in the comments where one exists."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

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

    def __post_init__(self) -> None:
        if self.default_partitions < 1:
            raise ConfigError("num.partitions must be at least 1")
        if self.connections_max < 1 or self.in_flight_max < 1 or self.frame_bytes_max < 1024:
            raise ConfigError("connection bounds must be positive (frames at least 1 KiB)")

    @property
    def advertised(self) -> tuple[str, int]:
        return (
            self.advertised_host or self.listen_host,
            self.advertised_port if self.advertised_port is not None else self.listen_port,
        )


__all__ = ["BrokerConfig", "parse_address"]

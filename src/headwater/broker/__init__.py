"""The Kafka-protocol broker: an asyncio server that moves bytes and calls the log engine."""

from __future__ import annotations

from headwater.broker.config import BrokerConfig
from headwater.broker.server import Broker, serve

__all__ = ["Broker", "BrokerConfig", "serve"]

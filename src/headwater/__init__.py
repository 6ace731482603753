"""Headwater: a log-centric event-streaming platform in Python that speaks Kafka."""

from __future__ import annotations

from headwater.errors import HeadwaterError

__version__ = "0.1.0"

__all__ = ["HeadwaterError", "__version__"]

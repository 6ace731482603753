"""Headwater: a log-centric event-streaming platform in Python that speaks Kafka."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from headwater.errors import HeadwaterError

if TYPE_CHECKING:
    from headwater.client import Client

__version__ = "0.1.0"


def connect(url: str, **settings: Any) -> Client:
    """A client on `url` (file:///path, a path, or kafka://host:port); see `headwater.client`.

    Imported on first use: the CLI and the broker should not pay for the client's imports.
    """
    from headwater.client import connect as connect_client

    return connect_client(url, **settings)


__all__ = ["HeadwaterError", "__version__", "connect"]

"""Stream processing over the client API: event time, windows, joins, tables, durable state."""

from __future__ import annotations

__all__: list[str] = []

"""Consumer group coordination (Kafka's classic group protocol) as a plain state machine."""

from __future__ import annotations

from headwater.coordinator.group import (
    Completion,
    CoordinatorConfig,
    GroupCoordinator,
    GroupState,
    JoinResult,
    SyncResult,
)

__all__ = [
    "Completion",
    "CoordinatorConfig",
    "GroupCoordinator",
    "GroupState",
    "JoinResult",
    "SyncResult",
]

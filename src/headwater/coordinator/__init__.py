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
from headwater.coordinator.transaction import (
    InitProducerIdResult,
    MarkerRequest,
    TransactionConfig,
    TransactionCoordinator,
    TransactionDescription,
    TransactionRecordError,
    TransactionState,
)

__all__ = [
    "Completion",
    "CoordinatorConfig",
    "GroupCoordinator",
    "GroupState",
    "InitProducerIdResult",
    "JoinResult",
    "MarkerRequest",
    "SyncResult",
    "TransactionConfig",
    "TransactionCoordinator",
    "TransactionDescription",
    "TransactionRecordError",
    "TransactionState",
]

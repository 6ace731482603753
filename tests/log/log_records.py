"""Record builders shared by the log engine tests."""

from __future__ import annotations

from headwater.log.record_batch import NewRecord


def records(count: int, *, start: int = 0, size: int = 20, key: bool = True) -> list[NewRecord]:
    """`count` deterministic records numbered from `start`, timestamps 1000 + number."""
    return [
        NewRecord(
            f"key-{number % 7}".encode() if key else None,
            (f"value-{number}-".encode() + b"x" * size)[: max(size, 12)],
            1_000 + number,
        )
        for number in range(start, start + count)
    ]

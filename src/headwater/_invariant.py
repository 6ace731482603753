"""`invariant()`: an assertion that survives `python -O`.

Use it for what must hold whatever the input (a bug if not); use typed errors for bad input.
"""

from __future__ import annotations

from typing import NoReturn

from headwater.errors import InvariantViolation


def invariant(condition: bool, message: str = "invariant violated") -> None:
    """Raise `InvariantViolation` unless `condition` holds."""
    if not condition:
        _fail(message)


def _fail(message: str) -> NoReturn:
    raise InvariantViolation(message)

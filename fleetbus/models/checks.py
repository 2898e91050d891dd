"""Parameter checks shared by the models: an impossible value is refused by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def require_positive(model: Any, *names: str) -> None:
    """Raise ValueError naming the first parameter (or element of a tuple parameter)
    of `model` that is not strictly positive — NaN included."""
    for name in names:
        value = getattr(model, name)
        values: Iterable[float] = value if isinstance(value, tuple) else (value,)
        if not all(v > 0 for v in values):
            raise ValueError(f"{type(model).__name__}.{name} must be positive, got {value}")

"""Argument checks shared by every layer: each raises ``ValueError`` naming the argument and value.

No dependencies beyond the standard library, so physics, data, models and config can all use them.
"""

from __future__ import annotations

import math
from enum import StrEnum
from numbers import Integral, Real

__all__ = [
    "check_choice", "check_dose", "check_gridsize", "check_patch_size", "check_positive_int",
    "validation_count"
]


def check_patch_size(N: object, name: str = "N") -> int:
    """``N`` must be an integer power of two ≥ 16 (the encoder halves it down to 8)."""
    if isinstance(N, bool) or not isinstance(N, Integral):
        raise ValueError(f"{name} must be an integer power of two >= 16, got {N!r}")
    value = int(N)
    if value < 16 or value & (value - 1):
        raise ValueError(f"{name} must be an integer power of two >= 16, got {N!r}")
    return value


def check_gridsize(gridsize: object, name: str = "gridsize") -> int:
    """``gridsize`` must be an integer ≥ 1 (a group holds ``gridsize²`` patterns)."""
    return check_positive_int(gridsize, name)


def check_positive_int(value: object, name: str) -> int:
    """An integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_choice(value: object, choices: type[StrEnum], name: str) -> str:
    """``value`` must be one of the ``choices`` (a member or its string); returns the string."""
    if str(value) not in set(choices):
        raise ValueError(f"{name} must be one of {[c.value for c in choices]}, got {value!r}")
    return str(value)


def check_dose(dose: object, name: str = "dose") -> float:
    """``dose`` (photons per pattern) must be a positive, finite number."""
    if isinstance(dose, bool) or not isinstance(dose, Real | str):
        raise ValueError(f"{name} must be a positive finite number of photons, got {dose!r}")
    try:
        value = float(dose)
    except ValueError:
        message = f"{name} must be a positive finite number of photons, got {dose!r}"
        raise ValueError(message) from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a positive finite number of photons, got {dose!r}")
    return value


def validation_count(n_groups: int, fraction: float) -> int:
    """Groups held out for validation: ``round(fraction · n_groups)``, at least 1 when validating.

    Shared by config validation (to refuse a batch size before any work) and ``fit``.
    """
    if fraction <= 0:
        return 0
    return max(1, round(fraction * n_groups))

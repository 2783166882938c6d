"""The arms: one module per reconstructor (pinn, baseline, lsqml, epie, …) behind one interface
(:mod:`.base`), found by :func:`arm` without a list to keep in step."""

from __future__ import annotations

import importlib
import pkgutil

from ptycho.arms.base import Arm, ArmInput, ProgressHook, Reconstruction

__all__ = ["Arm", "ArmInput", "ProgressHook", "Reconstruction", "arm", "arms"]


def arms() -> dict[str, Arm]:
    """``kind → Arm`` of every module of this package that defines ``ARM`` (imports no torch:
    the pty-chi arms import it when they run)."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        candidate = getattr(importlib.import_module(f"{__name__}.{info.name}"), "ARM", None)
        if isinstance(candidate, Arm):
            found[candidate.kind] = candidate
    return dict(sorted(found.items()))


def arm(kind: str) -> Arm:
    """The arm ``kind`` (``model.kind``).

    Raises:
        ValueError: no such arm, naming those there are.
    """
    known = arms()
    if kind not in known:
        raise ValueError(f"no arm {kind!r} in ptycho.arms (there are: {list(known)})")
    return known[kind]

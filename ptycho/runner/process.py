"""The process's mutable state: all of ptycho's, in one place.

What a process of a sweep must remember between calls: the termination signals it has received,
a termination held while a tracking-store call runs (:mod:`ptycho.runner.signals`), and the
sweeps it launched, which :func:`ptycho.runner.sweep.finish` closes after Hydra returns. No other
module keeps module-level mutable state (``tests/test_structure.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PROCESS", "ProcessState"]


@dataclass
class ProcessState:
    """Attributes:
    received: the termination signals received, in order.
    uninterrupted_depth: nesting of ``uninterrupted()`` blocks in the main thread.
    held: a termination held until the outermost such block ends (at most one).
    launched: the sweep callbacks this process launched and has not closed.
    """

    received: list[int] = field(default_factory=list)
    uninterrupted_depth: int = 0
    held: list[Callable[[], None]] = field(default_factory=list)
    launched: list[Any] = field(default_factory=list)


PROCESS = ProcessState()

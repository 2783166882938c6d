"""The one interface of every reconstructor (docs/architecture: "arms as plug-ins").

An arm is a module of :mod:`ptycho.arms` holding ``ARM = Arm(kind, reconstruct)``, with its
settings class in :mod:`ptycho.config.arms` and its option in ``conf/model/``. ``reconstruct``
gets the measurement (never the truth, unless its settings declare ``supervised``: then the true
patches of its training scan), the job's settings and a progress hook, and returns the object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptycho.config import JobConfig
from ptycho.data import Scan
from ptycho.reconstruction.predict import Patches

__all__ = ["Arm", "ArmInput", "ProgressHook", "Reconstruction"]

ProgressHook = Callable[[int, dict[str, float]], None]
"""Called after each epoch or iteration with its 1-based number and its curves' values
(``train_loss``, ``val_loss``, ``learning_rate``; ``nll_per_photon``)."""


@dataclass(frozen=True, eq=False)
class ArmInput:
    """What an arm reconstructs from.

    Attributes:
        training: the scan a learning arm trains on.
        scored: the scan to reconstruct (with ``data.design=reconstruct`` the same scan).
        supervision: ``(M, N, N)`` complex64 true object patches of ``training``, given only to
            an arm whose settings declare ``supervised`` (the baseline); else ``None``.
    """

    training: Scan
    scored: Scan
    supervision: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """What an arm made of the scored scan.

    Attributes:
        obj: ``(H, W)`` complex64 object on the scored scan's grid.
        expected: ``(K, N, N)`` float32 expected counts (photons per pixel, DC at the centre)
            the reconstruction predicts for measured patterns ``expected_patterns (K,)`` int64
            (a pattern may appear more than once: a network's overlapping groups); ``None``
            where it predicts none.
        history: its curves by name, one value per epoch or iteration.
        metrics: its own facts (timings, epochs or iterations, throughput, phase sync).
        tags: string facts for the run (``xla``, ``device``).
        alternatives: other objects it formed on the way (``(H, W)`` complex64 by name),
            scored beside ``obj`` with that name as prefix.
        probe: ``(N, N)`` complex64 its probe estimate (``None``: the given probe).
        positions: ``(M, 2)`` float64 its estimate of the scored scan's positions (refined by
            position correction; ``None``: the given, nominal ones).
        patches: the object patches it formed before stitching, with their positions and
            patterns (a network's predictions), or ``None`` (an engine forms the object whole).
        save: writes its own files into a folder (a trained model), or ``None``.
    """

    obj: np.ndarray
    expected: np.ndarray | None = None
    expected_patterns: np.ndarray | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    alternatives: dict[str, np.ndarray] = field(default_factory=dict)
    probe: np.ndarray | None = None
    positions: np.ndarray | None = None
    patches: Patches | None = None
    save: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class Arm:
    """A reconstructor: its ``kind`` (the ``model`` option) and its ``reconstruct``."""

    kind: str
    reconstruct: Callable[[ArmInput, JobConfig, ProgressHook | None], Reconstruction]

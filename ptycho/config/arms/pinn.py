"""The physics-informed network's settings (``model=pinn``)."""

from __future__ import annotations

from dataclasses import dataclass

from ptycho.config.arms.base import NetworkSettings
from ptycho.config.sections import check_number


@dataclass(frozen=True)
class PinnSettings(NetworkSettings):
    """Generator + overlap constraint + probe + far field + intensity scale, trained on the
    counts with the job's ``loss``."""

    kind: str = "pinn"
    trainable_probe: bool = False
    """Refine the probe during training (from the probe the scan gives)."""
    probe_learning_rate_scale: float = 1.0
    """With ``trainable_probe``: the probe's learning rate relative to the network's."""
    merge_iterations: int = 8
    """Conjugate-gradient steps of the overlap constraint's least-squares merge (g > 1; 0:
    normalised overlap-add). 8 leave true patches changed by about 2e-4 (bench/merge.py)."""

    def check(self) -> None:
        super().check()
        check_number("merge_iterations", self.merge_iterations, low=0, integer=True)
        check_number("probe_learning_rate_scale", self.probe_learning_rate_scale, low=0,
                     low_open=True)

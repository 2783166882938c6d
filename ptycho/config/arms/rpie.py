"""pty-chi's rPIE settings (``model=rpie``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ptycho.config.arms.base import PtychiSettings
from ptycho.config.sections import check_number


@dataclass(frozen=True)
class RPIESettings(PtychiSettings):
    """The regularised ptychographic iterative engine (Maiden, Johnson & Li 2017): ePIE's update
    with the denominator ``(1 − α)|P|² + α max|P|²``; ``step_size`` is its γ."""

    kind: str = "rpie"
    alpha: float = 0.1
    """The regularisation α in ``[0, 1]``: 0 divides by ``|P|²`` (unstable where the probe is
    dark), 1 is ePIE's ``max|P|²`` (pty-chi's default, kept)."""

    objective: ClassVar[str] = "rpie"

    def check(self) -> None:
        super().check()
        check_number("alpha", self.alpha, low=0, high=1)

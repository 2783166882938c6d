"""pty-chi's ePIE settings (``model=epie``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ptycho.config.arms.base import PtychiSettings
from ptycho.config.sections import check_number


@dataclass(frozen=True)
class EPIESettings(PtychiSettings):
    """The extended ptychographic iterative engine (Maiden & Rodenburg 2009): an amplitude
    projection per pattern; ``step_size`` is its object step."""

    kind: str = "epie"
    alpha: float = 0.1
    """Regularises the object update's denominator (``α · max|P|²``)."""

    objective: ClassVar[str] = "epie"

    def check(self) -> None:
        super().check()
        check_number("alpha", self.alpha, low=0)

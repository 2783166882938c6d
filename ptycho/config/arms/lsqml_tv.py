"""pty-chi's LSQML with a total-variation constraint (``model=lsqml_tv``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ptycho.config.arms.lsqml import LSQMLSettings
from ptycho.config.sections import check_number


@dataclass(frozen=True)
class LSQMLTVSettings(LSQMLSettings):
    """LSQML (Poisson) whose object, after every iteration, is projected towards lower total
    variation (pty-chi's Chambolle projection, 2 steps): the iterative arm with a prior, as the
    network has one. ``tv_weight`` is chosen per study by the held-out NLL
    (``experiment=tune_lsqml_tv``), with the PINN's search budget."""

    kind: str = "lsqml_tv"
    tv_weight: float = 0.01
    """The projection's strength (pty-chi's ``total_variation.weight``, Chambolle's 1/λ):
    larger smooths more."""

    objective: ClassVar[str] = "lsqml_poisson_tv"

    def check(self) -> None:
        super().check()
        check_number("tv_weight", self.tv_weight, low=0, low_open=True)

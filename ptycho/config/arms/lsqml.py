"""pty-chi's LSQML settings (``model=lsqml``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ptycho.config.arms.base import PtychiSettings


@dataclass(frozen=True)
class LSQMLSettings(PtychiSettings):
    """Least-squares maximum likelihood with a Poisson noise model (Odstrčil et al. 2018);
    ``step_size`` scales its solved optimal step."""

    kind: str = "lsqml"

    objective: ClassVar[str] = "lsqml_poisson"

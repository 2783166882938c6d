"""The supervised baseline's settings (``model=baseline``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ptycho.config.arms.base import ARM_DEPENDENT, NetworkSettings


@dataclass(frozen=True)
class BaselineSettings(NetworkSettings):
    """The PINN's generator trained with MAE on the true amplitude and phase patches of its
    training scan (the PtychoNN recipe); no physics head, no use of the job's ``loss``. Needs
    ``data.design=generalize``: trained on one object, scored on another."""

    kind: str = "baseline"

    uses: ClassVar[tuple[str, ...]] = tuple(key for key in ARM_DEPENDENT if key != "loss")
    supervised: ClassVar[bool] = True
    objective: ClassVar[str] = "supervised_mae"

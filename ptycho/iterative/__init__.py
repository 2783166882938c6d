"""The iterative arms: pty-chi's LSQML (Poisson) and ePIE on the same datasets as the networks.

pty-chi and torch are imported only when a reconstruction runs (the ``[iterative]`` extra).
"""

from ptycho.iterative.conventions import flat_field_scale, ptychi_positions, ptychi_probe
from ptycho.iterative.engine import (
    IterationHook,
    IterativeResult,
    IterativeUnavailable,
    load_ptychi,
    reconstruct_iteratively,
    torch_device,
)

__all__ = [
    "IterationHook",
    "IterativeResult",
    "IterativeUnavailable",
    "flat_field_scale",
    "load_ptychi",
    "ptychi_positions",
    "ptychi_probe",
    "reconstruct_iteratively",
    "torch_device",
]

"""The forward model of docs/physics.md §1–3 as pure TensorFlow functions (complex64, XLA-friendly).

One implementation serves simulation (``ptycho.data``) and training (``ptycho.models``).
"""

from ptycho.physics.dose import (
    dose_scale,
    expected_counts,
    expected_counts_at_dose,
    poisson_counts,
)
from ptycho.physics.geometry import (
    extract_patches,
    merge_patches,
    overlap_add,
    place_patches,
    resample_matrix,
    translate,
)
from ptycho.physics.propagation import far_field, illuminate, intensity

__all__ = [
    "dose_scale",
    "expected_counts",
    "expected_counts_at_dose",
    "extract_patches",
    "far_field",
    "illuminate",
    "intensity",
    "merge_patches",
    "overlap_add",
    "place_patches",
    "poisson_counts",
    "resample_matrix",
    "translate",
]

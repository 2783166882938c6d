"""The forward model of docs/physics.md §1–3 as pure TensorFlow functions (complex64, XLA-friendly):
geometry, propagation, dose and noise, the scan's operator and the Poisson likelihood.

One implementation serves simulation (``ptycho.data``), training (``ptycho.models``), the bound
and phase synchronisation.
"""

from ptycho.physics.detector import Detector, beamstop_mask, detect
from ptycho.physics.dose import (
    dose_scale,
    expected_counts,
    expected_counts_at_dose,
    poisson_counts,
)
from ptycho.physics.exact import block_average, exact_intensities, fourier_upsample
from ptycho.physics.geometry import (
    extract_patches,
    merge_patches,
    overlap_add,
    place_patches,
    resample_matrix,
    translate,
)
from ptycho.physics.likelihood import (
    poisson_fisher,
    poisson_nll,
    poisson_nll_per_photon,
    profiled_poisson_nll_per_photon,
)
from ptycho.physics.operator import PatchBlocks, Ptychography
from ptycho.physics.propagation import far_field, far_field_adjoint, illuminate, intensity

__all__ = [
    "Detector", "PatchBlocks", "Ptychography", "beamstop_mask", "block_average", "detect",
    "dose_scale", "exact_intensities", "expected_counts", "expected_counts_at_dose",
    "extract_patches", "far_field", "far_field_adjoint", "fourier_upsample", "illuminate",
    "intensity", "merge_patches", "overlap_add", "place_patches", "poisson_counts",
    "poisson_fisher", "poisson_nll", "poisson_nll_per_photon", "profiled_poisson_nll_per_photon",
    "resample_matrix", "translate"
]

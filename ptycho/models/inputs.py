"""What the models eat: grouped, normalised diffraction and the matching training targets.

The network sees diffraction amplitudes ``√k · input_scale``, where ``input_scale`` is one statistic
of the training split such that ``mean Σ x² = (N/2)²`` (docs/physics.md §6.1). It is stored with the
trained model and reused, unchanged, at inference.
"""

from __future__ import annotations

import numpy as np

from ptycho.data import Groups, Scan

__all__ = ["baseline_targets", "compute_input_scale", "grouped", "model_inputs", "pinn_targets"]


def compute_input_scale(counts: np.ndarray) -> float:
    """``(N/2) / sqrt(mean_j Σ k_j)`` for counts ``(M, N, N)`` photons; positive float."""
    counts = np.asarray(counts)
    N = counts.shape[-1]
    mean_total = float(counts.sum(axis=(-2, -1), dtype=np.float64).mean())
    if not np.isfinite(mean_total) or mean_total <= 0:
        raise ValueError(f"cannot normalise diffraction with mean total counts {mean_total!r}")
    return (N / 2) / float(np.sqrt(mean_total))


def grouped(per_pattern: np.ndarray, groups: Groups) -> np.ndarray:
    """``(M, N, N)`` per-pattern arrays → ``(G, N, N, C)`` channels-last groups."""
    return np.moveaxis(np.asarray(per_pattern)[groups.indices], 1, -1)


def model_inputs(scan: Scan, groups: Groups, input_scale: float) -> dict[str, np.ndarray]:
    """Model inputs for every group: ``diffraction (G, N, N, C)`` float32 normalised amplitudes
    and, for gridsize > 1, ``offsets (G, C, 2)`` float32 ``(x, y)`` pixels from the group centre."""
    amplitudes = np.sqrt(scan.counts, dtype=np.float32) * np.float32(input_scale)
    inputs = {"diffraction": np.ascontiguousarray(grouped(amplitudes, groups), np.float32)}
    if groups.gridsize > 1:
        inputs["offsets"] = np.ascontiguousarray(groups.offsets, np.float32)
    return inputs


def pinn_targets(scan: Scan, groups: Groups) -> np.ndarray:
    """Measured counts ``(G, N, N, C)`` float32 photons: the PINN's targets."""
    return np.ascontiguousarray(grouped(scan.counts, groups), np.float32)


def baseline_targets(truth_patches: np.ndarray, groups: Groups) -> np.ndarray:
    """Ground-truth ``[amplitude, phase]`` of ``truth_patches (M, N, N)`` complex, stacked on
    channels per group, ``(G, N, N, 2C)`` float32 (the supervised baseline's targets)."""
    patches = grouped(truth_patches, groups)
    return np.ascontiguousarray(np.concatenate([np.abs(patches), np.angle(patches)], axis=-1),
                                np.float32)

"""The dataset container and ``simulate``: object + probe + positions + dose → photon counts.

``simulate`` calls the one forward model of :mod:`ptycho.physics` (the code the PINN
differentiates), chunked so memory stays bounded for many positions. :class:`Scan` is what a
reconstruction is given: the measurement without its truth.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ptycho import physics
from ptycho.checks import check_dose, check_patch_size
from ptycho.data.scan import check_positions
from ptycho.physics.detector import Detector

__all__ = [
    "DetectorModel", "DiffractionData", "Scan", "extract_object_patches", "simulate",
    "simulate_exact"
]

log = logging.getLogger(__name__)


class _Patterns:
    """``N``, the number of patterns and the measured dose of ``counts`` (``(M, N, N)``)."""

    counts: np.ndarray

    @property
    def N(self) -> int:
        return int(self.counts.shape[1])

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    @cached_property
    def measured_dose(self) -> float:
        """Mean over patterns of Σ counts (photons per pattern)."""
        return float(self.counts.sum(axis=(1, 2), dtype=np.float64).mean())


@dataclass(frozen=True, eq=False)
class Scan(_Patterns):
    """What a reconstruction may see of a measurement: counts, positions, the probe and the grid,
    never the object (the truth of a simulation stays in :class:`DiffractionData`).

    Attributes:
        counts: ``(M, N, N)`` float32 photon counts per pixel, DC at ``(N/2, N/2)``, 0 where
            the detector does not measure.
        positions: ``(M, 2)`` float64 ``(x, y)`` patch centres, pixels of the object grid: the
            nominal ones (the true ones only in an ideal experiment).
        probe: ``(N, N)`` complex64 the probe the reconstructors start from (the true one only
            with ``data.probe_guess.kind=exact``).
        object_shape: ``(H, W)`` of the object grid the positions refer to.
        detector: its mask and background (known to every arm).
    """

    counts: np.ndarray
    positions: np.ndarray
    probe: np.ndarray
    object_shape: tuple[int, int]
    detector: Detector = field(default_factory=Detector)

    @cached_property
    def signal_dose(self) -> float:
        """Photons per pattern the sample scattered onto the whole detector, estimated from the
        counts: the measured dose less the background, over the share of an empty beam's far
        field that the measured pixels see (the measured dose for an ideal detector)."""
        if self.detector.ideal:
            return self.measured_dose
        measured = self.detector.weights(self.N).sum()
        signal = self.measured_dose - self.detector.background * float(measured)
        if not signal > 0:
            raise ValueError(f"the counts hold no photons above the background "
                             f"({self.detector.background:g} per pixel): no signal to scale by")
        return signal / self.detector.measured_fraction(self.probe)


@dataclass(frozen=True, eq=False)
class DiffractionData(_Patterns):
    """A simulated (or loaded) scan with its ground truth (a measured scan's truth is
    ``None``: :attr:`has_truth`).

    Attributes:
        counts: ``(M, N, N)`` float32 photon counts per pixel (integers for simulated data), DC at
            ``(N/2, N/2)``.
        positions: ``(M, 2)`` float64 ``(x, y)`` patch centres, pixels of ``obj``.
        probe: ``(N, N)`` complex64 illumination.
        obj: ``(H, W)`` complex64 object (ground truth for simulated data); ``None`` for a
            measured scan, whose grid is ``grid``.
        patches: ``(M, N, N)`` complex64 ground-truth object patches at ``positions``
            (``None`` without a truth).
        dose: requested mean photons per pattern (the simulation's; checked where it enters).
        metadata: JSON-serialisable provenance (the simulation spec, seeds, format version).
        nominal_positions: ``(M, 2)`` float64 the positions the reconstructors are given
            (``None``: the true ``positions``).
        probe_start: ``(N, N)`` complex64 the probe the reconstructors start from (``None``:
            the true ``probe``).
        detector: the detector's mask and background (default: an ideal photon counter).
        grid: ``(H, W)`` the object grid the positions refer to, when there is no ``obj``.
    """

    counts: np.ndarray
    positions: np.ndarray
    probe: np.ndarray
    obj: np.ndarray | None
    patches: np.ndarray | None
    dose: float
    metadata: dict[str, Any] = field(default_factory=dict)
    nominal_positions: np.ndarray | None = None
    probe_start: np.ndarray | None = None
    detector: Detector = field(default_factory=Detector)
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 3 or counts.shape[1] != counts.shape[2]:
            raise ValueError(f"counts must have shape (M, N, N), got {counts.shape}")
        if counts.dtype != np.float32:
            raise ValueError(f"counts must be float32, got {counts.dtype}")
        if not np.all(np.isfinite(counts)) or counts.min(initial=0.0) < 0:
            raise ValueError("counts must be finite and >= 0")
        n_patterns, N = counts.shape[0], counts.shape[1]
        check_patch_size(N, "N (counts.shape[1])")
        _expect(self.positions, "positions", (n_patterns, 2), np.float64)
        _expect(self.probe, "probe", (N, N), np.complex64)
        if self.obj is None:
            if self.grid is None or len(self.grid) != 2 or self.patches is not None:
                raise ValueError("a scan without its object needs its grid (H, W) and no "
                                 f"patches, got grid={self.grid}")
        else:
            _expect(self.patches, "patches", (n_patterns, N, N), np.complex64)
            obj = np.asarray(self.obj)
            if obj.ndim != 2 or obj.dtype != np.complex64:
                raise ValueError(f"obj must be a 2-D complex64 array, got {obj.shape} "
                                 f"{obj.dtype}")
            if self.grid is not None and tuple(self.grid) != obj.shape:
                raise ValueError(f"grid {self.grid} differs from the object's {obj.shape}")
        if self.nominal_positions is not None:
            _expect(self.nominal_positions, "nominal_positions", (n_patterns, 2), np.float64)
        if self.probe_start is not None:
            _expect(self.probe_start, "probe_start", (N, N), np.complex64)
        self.detector.weights(N)  # a mask of another size is refused here
        json.dumps(self.metadata)  # must be serialisable: it is stored in NPZ files and caches

    @property
    def has_truth(self) -> bool:
        """Whether the true object is known (simulated data, or a file that carries it)."""
        return self.obj is not None

    @property
    def object_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the object grid the positions refer to."""
        shape = self.obj.shape if self.obj is not None else self.grid
        return (int(shape[0]), int(shape[1]))

    @property
    def given_positions(self) -> np.ndarray:
        """``(M, 2)`` the positions the reconstructors are given (nominal)."""
        return self.positions if self.nominal_positions is None else self.nominal_positions

    @property
    def given_probe(self) -> np.ndarray:
        """``(N, N)`` the probe the reconstructors start from."""
        return self.probe if self.probe_start is None else self.probe_start

    @cached_property
    def scan(self) -> Scan:
        """The measurement without its truth: what a reconstruction is given (the nominal
        positions, the probe guess, the counts with unmeasured pixels 0, the detector)."""
        return Scan(self.detector.zero_unmeasured(self.counts), self.given_positions,
                    self.given_probe, self.object_shape, self.detector)

    def subset(self, index: np.ndarray) -> DiffractionData:
        """The patterns at ``index`` (same probe, object, dose and detector)."""
        return DiffractionData(
            counts=self.counts[index], positions=self.positions[index], probe=self.probe,
            obj=self.obj, patches=None if self.patches is None else self.patches[index],
            dose=self.dose, metadata=self.metadata, grid=self.grid,
            nominal_positions=(None if self.nominal_positions is None
                               else self.nominal_positions[index]),
            probe_start=self.probe_start, detector=self.detector)


@dataclass(frozen=True)
class DetectorModel:
    """A simulated detector: what every arm knows of it (:attr:`known`, the mask and the
    background) and the flaws none models (saturation, read noise; 0: none)."""

    known: Detector = field(default_factory=Detector)
    saturation: float = 0.0
    read_noise: float = 0.0

    def detect(self, expected: np.ndarray, seed: int) -> np.ndarray:
        """``(M, N, N)`` float32 counts of the signal ``expected`` (photons per pixel)."""
        return physics.detect(expected, self.known, seed=seed, saturation=self.saturation,
                              read_noise=self.read_noise)


def _expect(array: np.ndarray, name: str, shape: tuple[int, ...], dtype: type) -> None:
    array = np.asarray(array)
    if array.shape != shape or array.dtype != dtype:
        raise ValueError(
            f"{name} must be {np.dtype(dtype).name} with shape {shape}, "
            f"got {array.dtype.name} with shape {array.shape}"
        )


def extract_object_patches(obj: np.ndarray, positions: np.ndarray, N: int) -> np.ndarray:
    """``(M, N, N)`` complex64 object patches at ``positions (M, 2)`` (the operator's ``E_j``)."""
    operator = physics.Ptychography(np.ones((N, N), np.complex64), positions, np.shape(obj))
    return operator.patches(obj).numpy()


def simulate(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray, *, dose: float,
             seed: int, metadata: dict[str, Any] | None = None,
             detector: DetectorModel | None = None) -> DiffractionData:
    """Simulate noisy diffraction: ``k ~ Poisson(s² |fftshift(FFT(P · o_j))/N|²)``.

    Args:
        obj: ``(H, W)`` complex64 object transmission.
        probe: ``(N, N)`` complex64 probe; ``N`` a power of two ≥ 16.
        positions: ``(M, 2)`` ``(x, y)`` pixels, each patch inside ``obj``.
        dose: expected photons per pattern averaged over the dataset, positive and finite.
        seed: Poisson noise seed (same seed, same counts, bit for bit).
        metadata: provenance stored with the data.
        detector: the detector (:class:`DetectorModel`; ``None``: an ideal photon counter).
            The dose is the photons scattered onto the whole detector, before its mask.

    Returns:
        A validated :class:`DiffractionData`.
    """
    dose = check_dose(dose)
    probe = np.asarray(probe, dtype=np.complex64)
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(f"probe must have shape (N, N), got {probe.shape}")
    N = check_patch_size(probe.shape[0], "N (probe side)")
    obj = np.asarray(obj, dtype=np.complex64)
    if obj.ndim != 2:
        raise ValueError(f"obj must be a 2-D array, got shape {obj.shape}")
    if obj.shape[0] < N + 1 or obj.shape[1] < N + 1:
        raise ValueError(
            f"obj of shape {obj.shape} is smaller than a patch of N={N} (needs >= {N + 1} per side)"
        )
    positions = check_positions(positions, obj.shape, N)
    patches = extract_object_patches(obj, positions, N)
    expected = physics.expected_counts_at_dose(patches, probe, dose)
    detector = detector or DetectorModel()
    counts = detector.detect(expected.numpy(), seed)
    log.debug("simulated %d patterns N=%d dose=%g", len(counts), N, dose)
    return DiffractionData(counts=counts, positions=positions, probe=probe, obj=obj,
                           patches=patches, dose=dose, metadata=dict(metadata or {}),
                           detector=detector.known)


def simulate_exact(fine_obj: np.ndarray, fine_probe: np.ndarray, positions: np.ndarray, *,
                   oversampling: int, pixel_subsamples: int, dose: float, seed: int,
                   metadata: dict[str, Any] | None = None,
                   detector: DetectorModel | None = None) -> DiffractionData:
    """Simulate noisy diffraction with the finer forward model no reconstructor shares
    (:mod:`ptycho.physics.exact`): ``k ~ Poisson(s² I_exact)``.

    Args:
        fine_obj: ``(H·K, W·K)`` complex object sampled ``K = oversampling`` times finer.
        fine_probe: ``(N·K, N·K)`` complex probe on the same grid.
        positions: ``(M, 2)`` ``(x, y)`` reconstruction pixels, each patch inside the object.
        pixel_subsamples: far-field points per detector pixel side (odd).
        dose, seed, metadata, detector: as :func:`simulate`.

    Returns:
        A validated :class:`DiffractionData` on the reconstruction grid: its object and probe
        are the fine ones' ``K × K`` block averages (the probe at peak amplitude 1): the truth
        the arms are scored against and the probe they are given.
    """
    dose = check_dose(dose)
    obj = physics.block_average(np.asarray(fine_obj, np.complex64), oversampling)
    probe = physics.block_average(np.asarray(fine_probe, np.complex64), oversampling)
    probe = (probe / np.abs(probe).max()).astype(np.complex64)
    N = check_patch_size(probe.shape[0], "N (probe side / oversampling)")
    positions = check_positions(positions, obj.shape, N)
    intensities = physics.exact_intensities(fine_obj, fine_probe, positions, N=N,
                                            oversampling=oversampling,
                                            pixel_subsamples=pixel_subsamples)
    expected = physics.expected_counts(intensities, physics.dose_scale(intensities, dose))
    detector = detector or DetectorModel()
    counts = detector.detect(expected.numpy(), seed)
    log.debug("simulated %d patterns N=%d dose=%g (exact, K=%d, L=%d)", len(counts), N, dose,
              oversampling, pixel_subsamples)
    return DiffractionData(counts=counts, positions=positions, probe=probe, obj=obj,
                           patches=extract_object_patches(obj, positions, N), dose=dose,
                           metadata=dict(metadata or {}), detector=detector.known)

"""Measured scans: a file's counts, positions and probe fitted to a job's patch size, and the
dose lowered by binomial thinning (docs/physics.md §13).

- :func:`load_measured` reads a CXI file (:mod:`ptycho.data.cxi`) or a PtychoPINN NPZ, bins and
  crops the patterns to ``N``, turns the positions into object pixels and gives a
  :class:`~ptycho.data.DiffractionData` with no truth (``obj=None``), unless the file carries
  it (our export's extra group) and the patterns were not resampled.
- :func:`thin` keeps each photon with probability ``p``: for Poisson counts of mean ``λ`` the
  kept counts are exactly Poisson of mean ``p·λ`` (and independent of the dropped ones), so a
  measured high-dose scan gives exact low-dose data from the same specimen, probe and positions.
- :class:`MeasuredSpec` is what determines a thinned dataset: it keys the dataset cache like
  :class:`~ptycho.data.simulation.SimulationSpec` does.

Geometry: a frame of ``W`` pixels of side ``p`` at distance ``z`` samples the sample plane at
``λ·z / (W·p)``; binning by ``b`` keeps it, cropping the binned frame to ``N`` makes it
``λ·z / (N·b·p)`` (the probe is resampled alike: its far field cropped). CXI's
``translation`` is the sample's; the beam's position on the sample is its negative.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.checks import check_dose, check_patch_size
from ptycho.config import DataConfig, MeasuredConfig
from ptycho.config.files import finite_array
from ptycho.data.arrays import open_npz
from ptycho.data.cxi import CxiTruth, RawScan, read_cxi
from ptycho.data.dataset import DiffractionData, extract_object_patches
from ptycho.data.probe import estimate_probe
from ptycho.data.simulation import DatasetPair
from ptycho.physics.detector import Detector

__all__ = ["MEASURED_FORMAT", "MEASURED_NPZ_KEYS", "Geometry", "MeasuredSpec", "bin_frames",
           "fourier_crop", "load_measured", "raw_scan", "thin", "thinning_fraction"]

log = logging.getLogger(__name__)

MEASURED_FORMAT = 1
"""Bump when the loading or thinning numbers change: old cache entries are then never matched."""
PAD = 1
MEASURED_NPZ_KEYS = ("diffraction", "xcoords", "ycoords", "probeGuess")
"""What a measured NPZ must hold (PtychoPINN's contract; ``objectGuess`` is not needed)."""
"""Object pixels kept free beyond the outermost patch on every side of a measured scan's grid."""


def thin(counts: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Keep each photon with probability ``fraction``: ``k' ~ Binomial(k, fraction)``.

    Args:
        counts: ``(M, N, N)`` non-negative integer photon counts (float32 holding integers).
        fraction: in ``(0, 1]``; 1 returns the counts unchanged.
        seed: the thinning's seed (the job's noise seed): same seed, same counts.

    Returns:
        ``(M, N, N)`` float32 counts. For Poisson ``k`` of mean ``λ`` they are Poisson of mean
        ``fraction·λ``, independent of the photons dropped.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"thinning fraction must lie in (0, 1], got {fraction!r}")
    if fraction == 1.0:
        return np.asarray(counts, np.float32)
    whole = np.rint(counts).astype(np.int64)
    kept = np.random.default_rng(seed).binomial(whole, fraction)
    return kept.astype(np.float32)


def thinning_fraction(measured_dose: float, dose: float, n_patterns: int) -> float:
    """The fraction of photons to keep for a mean of ``dose`` photons per pattern.

    A dose within three standard errors of the measured mean (Poisson: ``√(d/M)`` photons) is
    the full dose (fraction 1): a scan simulated at 1e6 holds 1e6 ± its noise.

    Raises:
        ValueError: a dose above the measured one (thinning cannot add photons), naming both.
    """
    dose = check_dose(dose)
    tolerance = 3.0 * math.sqrt(measured_dose / max(n_patterns, 1))
    if dose > measured_dose + tolerance:
        raise ValueError(f"dose={dose:g} is above the scan's measured dose of "
                         f"{measured_dose:.6g} photons per pattern: thinning can only lower it "
                         f"(use dose <= {measured_dose:.4g})")
    if abs(dose - measured_dose) <= tolerance:
        return 1.0
    return dose / measured_dose


def bin_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """``(..., H, W)`` → ``(..., H//b, W//b)`` sums of ``b × b`` blocks around the frame's centre
    (the beam centre ``(H/2, W/2)`` stays at the binned frame's centre; edge rows that do not
    fill a block are dropped symmetrically)."""
    if factor == 1:
        return frames
    height, width = frames.shape[-2:]
    rows, cols = (height // factor) * factor, (width // factor) * factor
    top, left = (height - rows) // 2, (width - cols) // 2
    cut = frames[..., top:top + rows, left:left + cols]
    shape = (*cut.shape[:-2], rows // factor, factor, cols // factor, factor)
    return cut.reshape(shape).sum(axis=(-3, -1))


def _crop(frames: np.ndarray, N: int) -> np.ndarray:
    """The ``N × N`` centre of ``(..., H, W)`` frames (DC at ``(H//2, W//2)`` → ``(N/2, N/2)``)."""
    height, width = frames.shape[-2:]
    top, left = height // 2 - N // 2, width // 2 - N // 2
    return frames[..., top:top + N, left:left + N]


def fourier_crop(probe: np.ndarray, N: int) -> np.ndarray:
    """``(W, W)`` → ``(N, N)`` complex64: the probe whose far field is the centre ``N × N`` of
    ``probe``'s (the same field of view sampled ``W/N`` times more coarsely: what cropping the
    detector to ``N`` pixels does to the sample plane)."""
    width = probe.shape[0]
    if width == N:
        return probe.astype(np.complex64)
    far = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(probe)))
    near = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(_crop(far, N))))
    return (near * (N / width) ** 2).astype(np.complex64)


def _pixel_size(raw: RawScan, settings: MeasuredConfig, N: int) -> float:
    """Metres per object pixel at the sample for ``N``-pixel patterns after binning."""
    if settings.pixel_size is not None:
        return float(settings.pixel_size)
    missing = [name for name, value in (
        ("entry_1/instrument_1/source_1/energy", raw.wavelength),
        ("entry_1/instrument_1/detector_1/distance", raw.distance),
        ("entry_1/instrument_1/detector_1/x_pixel_size", raw.detector_pixel)) if value is None]
    if missing:
        raise ValueError(f"{raw.path}: no {', '.join(missing)}: the positions (metres) cannot "
                         "be turned into pixels; give data.measured.pixel_size (metres per "
                         "object pixel at the sample)")
    pixel_x, pixel_y = raw.detector_pixel
    if not math.isclose(pixel_x, pixel_y, rel_tol=0.01):
        raise ValueError(f"{raw.path}: detector pixels of {pixel_x:g} x {pixel_y:g} m are not "
                         "square: rectangular sample pixels are not supported")
    return raw.wavelength * raw.distance / (N * settings.bin * pixel_x)


def _grid(positions: np.ndarray, N: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Positions moved so every patch lies inside a grid just large enough, and the grid."""
    low = positions.min(axis=0)
    moved = positions - low + N / 2 + PAD
    extent = np.ceil(positions.max(axis=0) - low).astype(int)
    return moved, (int(extent[1]) + N + 2 * PAD + 1, int(extent[0]) + N + 2 * PAD + 1)


def load_measured(path: str | Path, N: int, settings: MeasuredConfig) -> DiffractionData:
    """A measured scan's file fitted to patch size ``N``.

    Args:
        path: a CXI file (``.cxi``, ``.h5``, …) or a PtychoPINN NPZ (``diffraction`` as
            amplitudes √counts, ``xcoords``/``ycoords`` in pixels, ``probeGuess``).
        N: the job's patch size; frames are binned by ``settings.bin`` then centre-cropped.
        settings: binning, position flips, the pixel size at the sample.

    Returns:
        :class:`DiffractionData` with counts ``(M, N, N)`` float32 photons, positions in pixels
        of its grid, the file's probe (else one estimated from the counts), its mask, and the
        truth only where the file carries it and the frames were not resampled. ``dose`` is the
        measured dose; ``metadata`` has the source, its pixel size and geometry.

    Raises:
        ValueError: naming the file and the field (a frame smaller than ``N`` after binning,
            missing geometry, counts that are not photon counts, …).
    """
    N = check_patch_size(N)
    path = Path(path)
    raw = _npz_raw(path) if path.suffix.lower() == ".npz" else read_cxi(path)
    frame = np.array(raw.counts.shape[1:]) // settings.bin
    if frame.min() < N:
        raise ValueError(f"{path}: frames of {raw.counts.shape[1]} x {raw.counts.shape[2]} "
                         f"pixels binned by {settings.bin} are {frame[0]} x {frame[1]}, smaller "
                         f"than N={N}: lower data.measured.bin or N")
    measured = raw.mask
    counts = raw.counts if measured is None else np.where(measured, raw.counts, 0.0)
    counts = _crop(bin_frames(counts, settings.bin), N).astype(np.float32)
    if measured is not None:  # a binned pixel is measured when all of its pixels are
        measured = _crop(bin_frames(measured.astype(np.int64), settings.bin) == settings.bin**2,
                         N)
    resampled = settings.bin != 1 or raw.counts.shape[1:] != (N, N)
    positions, grid, pixel_size = _positions(raw, settings, N)
    probe = _probe(raw, counts, measured, settings.bin, N)
    metadata: dict[str, Any] = {
        "source": str(path), "format": "npz" if path.suffix.lower() == ".npz" else "cxi",
        "frames": list(raw.counts.shape[1:]), "bin": settings.bin, "pixel_size_m": pixel_size,
        "wavelength_m": raw.wavelength, "distance_m": raw.distance}
    truth = _truth(raw, positions, N, resampled)
    data = DiffractionData(
        counts=counts, positions=truth.get("positions", positions), probe=probe,
        obj=truth.get("obj"), patches=truth.get("patches"),
        dose=float(counts.sum(axis=(1, 2), dtype=np.float64).mean()), metadata=metadata,
        nominal_positions=truth.get("nominal"), detector=Detector(measured),
        grid=None if "obj" in truth else grid)
    log.info("measured scan %s: %d patterns of %dx%d → N=%d (bin %d), %.4g photons per "
             "pattern, %.3g m per pixel%s", path.name, len(data), *raw.counts.shape[1:], N,
             settings.bin, data.measured_dose, pixel_size,
             ", with its true object" if data.has_truth else "")
    return data


def _positions(raw: RawScan, settings: MeasuredConfig,
               N: int) -> tuple[np.ndarray, tuple[int, int], float]:
    """``(M, 2)`` pixel positions on the grid, the grid ``(H, W)`` and the pixel size (m; NaN
    for an NPZ, whose positions are pixels already)."""
    if raw.wavelength is None and raw.distance is None and raw.path.endswith(".npz"):
        positions = raw.translation * (N * settings.bin / raw.counts.shape[2])
        pixel_size = math.nan
    else:
        pixel_size = _pixel_size(raw, settings, N)
        positions = -raw.translation / pixel_size  # the beam moves opposite to the sample
    positions = positions * np.array([-1.0 if settings.flip_x else 1.0,
                                      -1.0 if settings.flip_y else 1.0])
    moved, grid = _grid(positions, N)
    return moved, grid, pixel_size


def _probe(raw: RawScan, counts: np.ndarray, measured: np.ndarray | None, factor: int,
           N: int) -> np.ndarray:
    """The file's probe guess resampled as the frames were (else estimated from the counts),
    peak amplitude 1."""
    if raw.probe is None:
        log.info("%s holds no probe guess: estimating one from the counts", raw.path)
        return estimate_probe(counts, measured)
    binned = raw.probe.shape[0] // factor  # binning narrows the far field: the view shrinks
    probe = fourier_crop(_crop(raw.probe, binned), N)
    peak = float(np.abs(probe).max())
    if not peak > 0:
        raise ValueError(f"{raw.path}: the probe guess is zero everywhere")
    return (probe / peak).astype(np.complex64)


def _truth(raw: RawScan, positions: np.ndarray, N: int, resampled: bool) -> dict[str, Any]:
    """The file's truth (our export's group): the object, the true positions on its grid and
    the nominal ones there; empty without one or when the frames were resampled."""
    if raw.truth is None:
        return {}
    if resampled:
        log.warning("%s carries a true object, but its frames were binned or cropped: it is not "
                    "scored against (its pixels are not the reconstruction's)", raw.path)
        return {}
    truth = raw.truth
    nominal = -raw.translation / truth.pixel_size + np.asarray(truth.origin)
    obj = truth.obj.astype(np.complex64)
    true_positions = truth.positions.astype(np.float64)
    same = np.allclose(nominal, true_positions, atol=1e-9)
    return {"obj": obj, "positions": true_positions,
            "patches": extract_object_patches(obj, true_positions, N),
            "nominal": None if same else nominal}


def _npz_raw(path: Path) -> RawScan:
    """A PtychoPINN NPZ as a :class:`RawScan` with pixel positions and no geometry: counts
    ``diffraction²`` (checked to be photon counts), ``xcoords``/``ycoords``, ``probeGuess`` and
    our optional ``mask``. ``objectGuess``, where present, is a guess, not a truth: an NPZ scan
    is scored without one (our CXI export carries the truth)."""
    with open_npz(path) as npz:
        missing = [key for key in MEASURED_NPZ_KEYS if key not in npz.files]
        if missing:
            raise ValueError(f"{path}: NPZ key(s) {missing} missing (a measured NPZ needs "
                             f"{list(MEASURED_NPZ_KEYS)}; it holds {sorted(npz.files)})")
        files = {key: np.asarray(npz[key]) for key in (*MEASURED_NPZ_KEYS, "mask")
                 if key in npz.files}
    amplitudes = finite_array(files["diffraction"], f"{path}: NPZ key 'diffraction'", 3)
    if amplitudes.dtype.kind == "c" or amplitudes.min(initial=0.0) < 0:
        raise ValueError(f"{path}: NPZ key 'diffraction' must hold real amplitudes √counts >= 0 "
                         f"(min {amplitudes.real.min():.4g}, dtype {amplitudes.dtype})")
    counts = np.square(amplitudes.astype(np.float64))
    rounded = np.rint(counts)
    off = np.abs(counts - rounded) > 1e-3 * np.maximum(1.0, rounded)
    if off.any():
        frame, row, col = (int(i) for i in np.argwhere(off)[0])
        raise ValueError(f"{path}: NPZ key 'diffraction'² is not integer photon counts (e.g. "
                         f"{counts[frame, row, col]:.4g} at frame {frame}, pixel ({row}, {col})):"
                         " thinning and the Poisson likelihood need photon counts")
    n_patterns, frame_shape = amplitudes.shape[0], amplitudes.shape[1:]
    coordinates = []
    for key in ("xcoords", "ycoords"):
        values = finite_array(files[key], f"{path}: NPZ key {key!r}", 1)
        if values.shape != (n_patterns,):
            raise ValueError(f"{path}: NPZ key {key!r} has shape {values.shape}, not "
                             f"({n_patterns},) like 'diffraction'")
        coordinates.append(values.astype(np.float64))
    probe = finite_array(files["probeGuess"], f"{path}: NPZ key 'probeGuess'", 2)
    if probe.shape != frame_shape:
        raise ValueError(f"{path}: NPZ key 'probeGuess' has shape {probe.shape}, not the "
                         f"frames' {frame_shape}")
    mask = files.get("mask")
    if mask is not None and (mask.shape != frame_shape or mask.dtype != bool):
        raise ValueError(f"{path}: NPZ key 'mask' must be a {frame_shape} bool array, got "
                         f"{mask.dtype} {mask.shape}")
    return RawScan(counts=rounded.astype(np.float32), translation=np.stack(coordinates, 1),
                   wavelength=None, distance=None, detector_pixel=None,
                   probe=probe.astype(np.complex64), mask=mask, truth=None, path=str(path))


@dataclass(frozen=True)
class Geometry:
    """The instrument a simulated scan is written as measured with (the simulation itself has
    no units: its sample pixel is ``λ·z / (N·p)``)."""

    wavelength: float = 1.5498e-10
    """Metres (8 keV)."""
    distance: float = 2.0
    """Sample to detector, metres."""
    detector_pixel: float = 75e-6
    """Metres (a hybrid pixel detector's)."""

    def pixel_size(self, N: int) -> float:
        """Metres per object pixel for ``N``-pixel patterns."""
        return self.wavelength * self.distance / (N * self.detector_pixel)


def raw_scan(data: DiffractionData, geometry: Geometry) -> RawScan:
    """A simulated scan as a measured file holds it (:func:`ptycho.data.cxi.write_cxi`): the
    counts, the positions the reconstructors are given as sample translations (metres, the
    object's centre at 0), the probe they are given, the mask, and the truth (object, probe,
    true positions) as the extra group. :func:`load_measured` reads it back to ``data``'s
    numbers.

    Raises:
        ValueError: a scan without its truth, or with a background (CXI has no field for it).
    """
    if not data.has_truth:
        raise ValueError("only a simulated scan (with its truth) is exported")
    if data.detector.background:
        raise ValueError(f"a detector background ({data.detector.background:g} photons per "
                         "pixel) has no CXI field: export a scan without data.detector.background")
    N = data.N
    pixel_size = geometry.pixel_size(N)
    height, width = data.object_shape
    origin = (width / 2.0, height / 2.0)
    translation = -(data.given_positions - np.asarray(origin)) * pixel_size
    truth = CxiTruth(obj=data.obj, probe=data.probe, positions=data.positions, origin=origin,
                     pixel_size=pixel_size)
    return RawScan(counts=np.rint(data.counts).astype(np.float32), translation=translation,
                   wavelength=geometry.wavelength, distance=geometry.distance,
                   detector_pixel=(geometry.detector_pixel, geometry.detector_pixel),
                   probe=data.given_probe, mask=data.detector.mask, truth=truth)


@dataclass(frozen=True)
class MeasuredSpec:
    """What determines a measured dataset at a dose: the file (by content), how it is fitted
    to ``N``, the dose and the thinning's seed. Its fingerprint keys the dataset cache."""

    N: int
    dose: float
    noise_seed: int
    data: DataConfig

    def fingerprint(self) -> dict[str, Any]:
        return {"format": MEASURED_FORMAT, "source": "file", "digest": self.data.digest,
                "N": self.N, "dose": float(self.dose), "noise_seed": self.noise_seed,
                "measured": dataclasses.asdict(self.data.measured)}

    def make(self) -> DatasetPair:
        """The scan thinned to ``dose`` (one scan: trained on and scored); its metadata say
        the full dose and the fraction of photons kept."""
        full = load_measured(self.data.path, self.N, self.data.measured)
        fraction = thinning_fraction(full.measured_dose, self.dose, len(full))
        counts = thin(full.counts, fraction, self.noise_seed)
        metadata = {**full.metadata, "full_dose": full.measured_dose,
                    "thinning_fraction": fraction, "spec": self.fingerprint()}
        thinned = dataclasses.replace(full, counts=counts, dose=self.dose, metadata=metadata,
                                      detector=Detector(full.detector.mask,
                                                        full.detector.background * fraction))
        log.info("thinned to %.4g photons per pattern: kept a fraction %.4g of the %.4g measured",
                 self.dose, fraction, full.measured_dose)
        return DatasetPair(train=thinned, test=thinned)

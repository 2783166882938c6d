"""The sections of a job's settings: frozen, typed, every default written once, each checking its
own values (docs/configuration.md is generated from them).

The choices of an option are declared beside it as a ``StrEnum``; a member compares equal to its
string, so ``config.eval.phase_sync == "likelihood"`` reads naturally. A bad value raises
:class:`ConfigError` naming the key and the value. This package imports no framework
(``tests/test_structure.py``): the data layer takes these sections directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
import zipfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

MAX_DOSE = 1e15
"""Photons per pattern above which float32 training overflows (measured at N=16: NaN between 1e21
and 1e23); 1e15 keeps a wide margin and is far above any real detector's dose per pattern."""

MIN_DOSE = 1.0
"""Photons per pattern below which a job is refused: most patterns would hold no photon (at
1e-3 the counts are all zero and cannot be normalised)."""

SEARCH_OBJECTIVES = ("val_loss_best", "heldout_nll_per_photon_best")
"""The job metrics a settings search may optimise (``hydra.sweeper.metric``): computed from the
measured counts alone (a network's validation loss on its held-out region, an engine's Poisson
NLL of its held-out patterns), never from the truth; the arms compute them without it
(``tests/arms/test_interface.py`` changes the truth and finds them unchanged)."""

TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the value."""


# --- Choices -------------------------------------------------------------------------------------


class Loss(StrEnum):
    poisson_nll = "poisson_nll"
    mae = "mae"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class Stopping(StrEnum):
    """When an iterative engine stops (docs/physics.md §10.3)."""

    fixed = "fixed"
    """After ``iterations`` (or at ``tolerance``)."""
    heldout = "heldout"
    """At the iteration after which the Poisson NLL of a random ``heldout_fraction`` of the
    patterns, left out of the fit, stopped improving for ``patience`` iterations; then the
    engine runs that many iterations on every pattern. A rule that reads the data alone."""


class ObjectKind(StrEnum):
    lines = "lines"
    grf = "grf"
    cells = "cells"
    npz = "npz"


class PhaseMode(StrEnum):
    none = "none"
    structure = "structure"
    independent = "independent"


class ProbeKind(StrEnum):
    """``disc``: a soft-edged disc with a quadratic phase; ``focused``: a circular aperture (or a
    zone plate with a central stop) focused and defocused, with optional astigmatism and coma;
    ``npz``: a user's probe."""
    disc = "disc"
    focused = "focused"
    npz = "npz"


class ProbeStart(StrEnum):
    """What the reconstructors are given as the probe (docs/physics.md §12.2)."""

    exact = "exact"
    """The probe the data were simulated with (an ideal experiment)."""
    perturbed = "perturbed"
    """The probe's model at the wrong defocus (``defocus_error``), and for a focused probe
    without the truth's astigmatism and coma unless ``keep_aberrations``."""
    estimate = "estimate"
    """From the data alone: the amplitude of the mean diffraction pattern (the empty beam's far
    field, roughly), with a flat far-field phase, brought to the sample."""


class DataSource(StrEnum):
    """Where a job's diffraction comes from (docs/physics.md §13)."""

    simulate = "simulate"
    """Simulated from ``data.object``, ``data.probe`` and ``data.scan`` at the job's dose."""
    file = "file"
    """A measured scan in ``data.path`` (CXI or PtychoPINN NPZ), thinned to the job's dose."""


class TruthFree(StrEnum):
    """Whether a job also scores its reconstruction without the ground truth (half-split FRC,
    agreement with a full-dose reference; docs/physics.md §13.3)."""

    auto = "auto"
    """On for measured data, off for simulated (resolved when the config is validated)."""
    on = "on"
    off = "off"


class ScanKind(StrEnum):
    raster = "raster"
    random = "random"


class Simulator(StrEnum):
    """How simulated diffraction is computed (docs/physics.md §3.3)."""

    bilinear = "bilinear"
    """The reconstructors' own forward model: the object on the reconstruction grid, bilinear
    sub-pixel shifts, the far field sampled at the detector pixels' centres. Data made with it
    favour any arm that shares it (the PINN): an inverse crime."""
    exact = "exact"
    """An object ``oversampling`` times finer, sub-pixel positions applied exactly (Fourier
    shifts), the far field integrated over each detector pixel (``pixel_subsamples``² points);
    the truth scored is the fine object's block average. No arm shares it."""


class Design(StrEnum):
    """What a job's test set is (docs/physics.md §4.4)."""

    reconstruct = "reconstruct"
    """The test set is the measured scan itself: the network trains on those patterns and is
    scored on its reconstruction of them, as an iterative reconstruction is."""
    generalize = "generalize"
    """The test set is an independent realisation of the object, scanned with the training
    scan's geometry (same number of positions, same density, its own jitter and noise)."""


class PhaseAlignment(StrEnum):
    plane = "plane"
    mean = "mean"
    none = "none"


class StitchWeighting(StrEnum):
    probe = "probe"
    uniform = "uniform"


class Activation(StrEnum):
    """The generator's hidden activation. ``leaky_relu`` (slope 0.2 below 0): no unit can die;
    ``relu``: the wave-1 generator (saved models without an activation are ``relu``)."""
    leaky_relu = "leaky_relu"
    relu = "relu"


class PhaseSync(StrEnum):
    """How a network's patches get the constant phase no pattern measures (docs/physics.md §8.1).
    ``overlap``: agreement of overlapping patches; ``likelihood``: from there, the constants under
    which the stitched object best explains the measured counts; ``none``: as predicted;
    ``auto``: ``likelihood`` for a job that trains at least :data:`LIKELIHOOD_SYNC_EPOCHS`
    epochs, ``overlap`` for a shorter check (resolved when the config is validated, so runs
    record, and hash, the choice made)."""
    none = "none"
    overlap = "overlap"
    likelihood = "likelihood"
    auto = "auto"


LIKELIHOOD_SYNC_EPOCHS = 10
"""``phase_sync=auto`` synchronises by the likelihood from this many training epochs. Its
iterations cost about 1 to 4 epochs of training (N=32 g=1: 1.6 s against 1.9 s an epoch; N=128
g=2: 122 s against 33 s; docs/results/2026-12-07-pace.md), so a shorter job (a 1-epoch check of
the pipeline, whose patches are far from converged anyway) would spend most of its time there."""


class DtypePolicy(StrEnum):
    float32 = "float32"
    mixed_float16 = "mixed_float16"
    mixed_bfloat16 = "mixed_bfloat16"


class Schedule(StrEnum):
    """The learning-rate schedule: ``plateau`` halves the rate when the monitored loss stops
    improving and stops early (wave 1); ``cosine`` warms up linearly over
    ``warmup_fraction`` of the steps, then decays along a cosine to ``min_learning_rate`` at
    the last epoch, so a fixed budget of epochs is spent on purpose (docs/results/
    2026-12-07-pace.md). Early stopping keeps the best weights under either."""

    plateau = "plateau"
    cosine = "cosine"


class JitCompile(StrEnum):
    """``auto``: XLA on a GPU, TensorFlow's oneDNN path on a CPU (1.5× faster there, measured);
    ``true``/``false`` force it."""

    auto = "auto"
    true = "true"
    false = "false"


# --- Checks used by the sections -----------------------------------------------------------------


def fail(key: str, value: object, reason: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: {reason}")


def check_number(key: str, value: object, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(key, value, "must be a number")
    if integer and not isinstance(value, int):
        raise fail(key, value, "must be an integer")
    if not math.isfinite(value):
        raise fail(key, value, "must be finite")
    if low is not None and (value <= low if low_open else value < low):
        raise fail(key, value, f"must be {'>' if low_open else '>='} {low:g}")
    if high is not None and value > high:
        raise fail(key, value, f"must be <= {high:g}")


def checked(key: str, value: object, check: typing.Callable[[], Any]) -> Any:
    """Run a shared ``ptycho.checks`` check, re-raising its ValueError under the config key."""
    try:
        return check()
    except ValueError as error:
        raise fail(key, value, str(error)) from None


def _npz_file(key: str, path: str, what: str) -> None:
    """An NPZ input must exist and be an NPZ holding its array (2-D, finite): refused before
    any work, with the key and what is wrong named (:mod:`ptycho.config.files`)."""
    from ptycho.config.files import object_array, probe_array  # numpy: only when a file is set

    if not Path(path).is_file():
        raise fail(key, path, f"NPZ file not found ({what})")
    if not zipfile.is_zipfile(path):
        raise fail(key, path, f"not a valid NPZ file (not a zip archive; {what})")
    try:
        (probe_array if "probe" in what else object_array)(path)
    except ValueError as error:
        raise fail(key, path, f"{error} ({what})") from None


class Section:
    """Shared behaviour of the frozen sections: coerce on construction, then check."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            kind = hints[item.name]
            choices = enum_of(kind)
            if choices is not None and value is not None and not isinstance(value, choices):
                if choices is JitCompile and isinstance(value, bool | str):  # YAML's booleans,
                    value = str(value).lower()  # which Hydra's str field holds as 'True'/'False'
                try:
                    value = choices(value)
                except ValueError:
                    raise fail(item.name, value, f"must be one of "
                               f"{[member.value for member in choices]}") from None
            elif is_float(kind) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # 1000 and 1e3 are the same setting (and hash alike)
            object.__setattr__(self, item.name, value)
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` (``field=value: reason``) for a bad value."""


def enum_of(kind: Any) -> type[StrEnum] | None:
    for option in typing.get_args(kind) or (kind,):
        if isinstance(option, type) and issubclass(option, StrEnum):
            return option
    return None


def is_float(kind: Any) -> bool:
    return kind is float or float in typing.get_args(kind)


# --- The sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectConfig(Section):
    """What determines a simulated object (all of it enters the dataset-cache key)."""

    kind: ObjectKind = ObjectKind.lines
    size: int | None = None
    """Pixels per side; ``None``: twice the patch size N (ignored for ``npz``)."""
    phase: PhaseMode = PhaseMode.independent
    amplitude_min: float = 0.5
    amplitude_max: float = 1.0
    phase_max: float = math.pi / 2
    """Radians."""
    lines_density: float = 4.0
    """Line segments per 1000 px² of the drawing canvas (``lines`` only)."""
    grf_exponent: float = 3.0
    """Power-law exponent β of the spectrum ``|k|^-β`` (``grf`` only)."""
    path: str = ""
    """NPZ file holding the object (``npz`` only; its size then comes from the file)."""

    def check(self) -> None:
        if self.size is not None:
            check_number("size", self.size, low=16, integer=True)
        for key in ("amplitude_min", "amplitude_max", "phase_max", "lines_density",
                    "grf_exponent"):
            check_number(key, getattr(self, key))
        if not 0.0 < self.amplitude_min <= self.amplitude_max:
            raise fail("amplitude_min", self.amplitude_min,
                        f"must satisfy 0 < amplitude_min <= amplitude_max={self.amplitude_max}")
        if not 0.0 <= self.phase_max <= math.pi:
            raise fail("phase_max", self.phase_max, "must lie in [0, pi]")
        if self.lines_density <= 0:
            raise fail("lines_density", self.lines_density, "must be > 0")
        if self.grf_exponent <= 0:
            raise fail("grf_exponent", self.grf_exponent, "must be > 0")
        if self.kind == ObjectKind.npz:
            _npz_file("path", self.path, "data/object=npz")

    def fingerprint(self) -> dict[str, object]:
        """The fields that determine the object, with an NPZ named by its content hash."""
        return _fingerprint(self)


@dataclass(frozen=True)
class ProbeConfig(Section):
    """What determines the probe (enters the dataset-cache key; an NPZ by its content hash)."""

    kind: ProbeKind = ProbeKind.disc
    radius_fraction: float = 0.17
    """Disc radius as a fraction of ``N``."""
    edge_sigma: float = 1.0
    """Gaussian blur of the disc edge, pixels."""
    phase_curvature: float = 2.0
    """Quadratic phase at the disc edge, radians. Nonzero by default: a real, centro-symmetric
    probe leaves the twin-image ambiguity o(r) ↔ conj(o(−r)) of a single pattern unresolved."""
    path: str = ""
    """NPZ file with a ``probeGuess`` (or ``probe``) ``(N, N)`` complex array (``npz`` only)."""
    aperture_radius: float = 8.0
    """``focused``: radius of the illuminating aperture's image on the detector, detector pixels
    (the convergence semi-angle in units of a detector pixel's angle; < N/2). The focus (Airy
    core) then has radius ``0.61·N/aperture_radius`` sample pixels."""
    central_stop: float = 0.0
    """``focused``: radius of a central stop (a zone plate's), fraction of the aperture's."""
    defocus: float = 4.0
    """``focused``: the pupil phase ``defocus·ρ²`` at the sample, radians at the aperture's edge
    (``ρ = 1``): the sample sits that far from the focus. Its geometric footprint has radius
    ``N·|defocus|/(π·aperture_radius)`` pixels (4 rad at 8 pixels: 0.16·N, the disc's size)."""
    astigmatism_x: float = 0.0
    """``focused``: the Zernike term ``ρ² cos 2θ`` (θ from the detector's column axis), radians
    at the aperture's edge."""
    astigmatism_diagonal: float = 0.0
    """``focused``: ``ρ² sin 2θ``, radians at the aperture's edge."""
    coma_x: float = 0.0
    """``focused``: ``(3ρ³ − 2ρ) cos θ``, radians at the aperture's edge."""
    coma_y: float = 0.0
    """``focused``: ``(3ρ³ − 2ρ) sin θ``, radians at the aperture's edge."""

    def check(self) -> None:
        check_number("radius_fraction", self.radius_fraction, low=0, low_open=True, high=0.5)
        check_number("edge_sigma", self.edge_sigma, low=0)
        check_number("phase_curvature", self.phase_curvature)
        if self.kind == ProbeKind.npz:
            _npz_file("path", self.path, "data.probe.kind=npz")
        check_number("aperture_radius", self.aperture_radius, low=0, low_open=True)
        check_number("central_stop", self.central_stop, low=0, high=1)
        if self.central_stop >= 1:
            raise fail("central_stop", self.central_stop, "must be < 1 (it would stop all light)")
        for name in ("defocus", "astigmatism_x", "astigmatism_diagonal", "coma_x", "coma_y"):
            check_number(name, getattr(self, name))

    def fingerprint(self) -> dict[str, object]:
        fields = _fingerprint(self)
        if self.kind != ProbeKind.focused:  # not read: datasets made before them keep their key
            for name in FOCUSED_PROBE_SETTINGS:
                fields.pop(name, None)
        return fields


FOCUSED_PROBE_SETTINGS = ("aperture_radius", "central_stop", "defocus", "astigmatism_x",
                          "astigmatism_diagonal", "coma_x", "coma_y")
"""The settings only ``data.probe.kind=focused`` reads (left out of the dataset key and the
config hash otherwise)."""


@dataclass(frozen=True)
class ScanConfig(Section):
    """How scan positions are drawn (enters the dataset-cache key)."""

    kind: ScanKind = ScanKind.raster
    """``raster``: a grid covering the object, as dense as the number of patterns allows."""
    margin: float = 0.0
    """Extra border (pixels) kept free beyond the patch half-width."""
    jitter: float = 1.0
    """Uniform jitter ± pixels applied to raster points (``raster`` only)."""
    subpixel: bool = True
    """False rounds positions to whole pixels (exact patch extraction and stitching)."""

    def check(self) -> None:
        check_number("margin", self.margin, low=0)
        check_number("jitter", self.jitter, low=0)


@dataclass(frozen=True)
class ProbeGuessConfig(Section):
    """What the reconstructors start from as the probe (not the data: the counts are the same
    whatever the guess)."""

    kind: ProbeStart = ProbeStart.exact
    defocus_error: float = 1.0
    """``perturbed``: radians added to the model's defocus at the aperture's edge (a focused
    probe's ``defocus``, a disc's ``phase_curvature``)."""
    keep_aberrations: bool = False
    """``perturbed``, focused probe: keep the truth's astigmatism and coma (false: the guess
    lacks them, as a model of the optics usually does)."""

    def check(self) -> None:
        check_number("defocus_error", self.defocus_error)


@dataclass(frozen=True)
class PositionErrorConfig(Section):
    """How the true scan positions differ from the nominal ones the reconstructors are given
    (docs/physics.md §12.3): ``true = centre + R(rotation)·(1 + scale)·(nominal − centre) +
    drift·t + σ·ξ`` with ``t`` from 0 to 1 along the scan order and ``ξ`` seeded standard
    normal per axis; the true positions are then kept inside the object."""

    sigma: float = 0.0
    """Random error per axis, pixels (Gaussian standard deviation)."""
    scale: float = 0.0
    """Relative scale error (0.01: the stage moves 1% further than commanded)."""
    rotation: float = 0.0
    """Rotation of the stage's axes against the detector's, degrees."""
    drift_x: float = 0.0
    """Drift accumulated along ``x`` from the first to the last position, pixels."""
    drift_y: float = 0.0
    """Drift accumulated along ``y`` over the scan, pixels."""

    def check(self) -> None:
        check_number("sigma", self.sigma, low=0)
        check_number("scale", self.scale, low=-0.5, high=0.5)
        check_number("rotation", self.rotation, low=-45, high=45)
        check_number("drift_x", self.drift_x)
        check_number("drift_y", self.drift_y)

    @property
    def exact(self) -> bool:
        """The reconstructors are given the true positions."""
        return not any(getattr(self, item.name) for item in dataclasses.fields(self))


@dataclass(frozen=True)
class DetectorConfig(Section):
    """The detector (docs/physics.md §12.1): what it masks, its background and its flaws."""

    beamstop_radius: float = 0.0
    """A round beamstop over the pixels within this radius of the zero frequency, detector
    pixels (< N/2); 0: none. Masked in every loss, likelihood, bound and figure."""
    background: float = 0.0
    """Expected background photons per pixel and pattern (Poisson), known to every arm."""
    saturation: float = 0.0
    """Counts at which a pixel saturates (clipped); 0: never. Not modelled by any arm."""
    read_noise: float = 0.0
    """Gaussian read noise, photons (standard deviation; rounded to whole counts); 0: none. Not
    modelled by any arm."""

    def check(self) -> None:
        for name in ("beamstop_radius", "background", "saturation", "read_noise"):
            check_number(name, getattr(self, name), low=0)

    @property
    def ideal(self) -> bool:
        return not any(getattr(self, item.name) for item in dataclasses.fields(self))


CONDITION_SECTIONS = ("probe_guess", "position_error", "detector")
"""The ``data`` sections of an experiment's conditions (wave 3): at their defaults (an ideal
experiment) they are left out of the dataset key and the config hash, so the jobs logged before
them keep both."""


def _fingerprint(section: Any) -> dict[str, object]:
    fields = {item.name: getattr(section, item.name) for item in dataclasses.fields(section)}
    if section.kind == "npz":
        fields["path"] = hashlib.sha256(Path(section.path).read_bytes()).hexdigest()
    return fields


@dataclass(frozen=True)
class MeasuredConfig(Section):
    """How a measured scan (``data.source=file``) is fitted to the job's patch size N
    (docs/physics.md §13.1)."""

    bin: int = 1
    """Sum ``bin × bin`` detector pixels first (keeps the field of view of the pattern), then
    crop the centre to N (coarser sample pixels)."""
    flip_x: bool = False
    """Mirror the positions' ``x`` (a stage whose axis runs against the detector's)."""
    flip_y: bool = False
    """Mirror the positions' ``y``."""
    pixel_size: float | None = None
    """Metres per object pixel at the sample; ``None``: from the file's geometry
    (``λ·z / (N·bin·p)``). Needed for a CXI file without energy, distance or pixel size."""

    def check(self) -> None:
        check_number("bin", self.bin, low=1, high=64, integer=True)
        if self.pixel_size is not None:
            check_number("pixel_size", self.pixel_size, low=0, low_open=True)


SIMULATION_SETTINGS = ("object", "probe", "scan", "probe_guess", "position_error", "detector",
                       "design", "simulator", "oversampling", "pixel_subsamples")
"""The ``data`` settings only a simulation reads (left out of the config hash for a measured
scan, whose file holds its probe, positions and detector)."""

MEASURED_SUFFIXES = (".cxi", ".h5", ".hdf5", ".nxs", ".npz")
"""The file types ``data.path`` reads: CXI 1.6 in HDF5, PtychoPINN's NPZ."""


@dataclass(frozen=True)
class DataConfig(Section):
    """The data: simulated (object, probe, scan and how many patterns of each split) or a
    measured scan's file (``source=file``, ``path``)."""

    source: DataSource = DataSource.simulate
    """``simulate`` | ``file`` (a measured scan in ``path``, thinned to the job's dose)."""
    path: str = ""
    """``source=file``: the CXI (``.cxi``, ``.h5``) or NPZ file of the scan."""
    digest: str | None = None
    """``source=file``: the file's sha256 (``None``: filled in from the file at validation; set,
    the file must have it, so a study pins its data)."""
    measured: MeasuredConfig = field(default_factory=MeasuredConfig)
    """``source=file``: binning, position flips, the pixel size at the sample."""

    object: ObjectConfig = field(default_factory=ObjectConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    probe_guess: ProbeGuessConfig = field(default_factory=ProbeGuessConfig)
    """The probe the reconstructors start from (``kind=exact``: the true one)."""
    position_error: PositionErrorConfig = field(default_factory=PositionErrorConfig)
    """How far the true positions are from the nominal ones the reconstructors get."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """Beamstop, background, saturation, read noise (defaults: an ideal photon counter)."""
    n_train: int = 512
    """Diffraction patterns of the measured scan (the test scan, with ``generalize``, has as
    many)."""
    design: Design = Design.reconstruct
    """``reconstruct``: score the reconstruction of the measured patterns; ``generalize``: score
    a second object scanned the same way."""
    noise_seed: int | None = None
    """``None``: the job's seed."""
    simulator: Simulator = Simulator.bilinear
    """``bilinear``: the reconstructors' own forward model (an inverse crime, fast: tests);
    ``exact``: a finer object, exact shifts, detector pixels integrated (the studies)."""
    oversampling: int = 4
    """``exact``: how many times finer than the reconstruction grid the object and probe are
    sampled (each reconstruction pixel is the mean of oversampling² of theirs)."""
    pixel_subsamples: int = 3
    """``exact``: points per detector pixel side at which the far field is integrated (odd)."""
    cache: bool = True
    """Reuse simulated datasets from ``cache_dir`` (not part of the config hash)."""
    cache_dir: str | None = None
    """``None``: ``<project>/outputs/cache/datasets`` (not part of the config hash)."""

    def for_patch(self, N: int) -> DataConfig:
        """This section with the object's size resolved for patch size ``N`` (``None``: 2·N)."""
        if self.object.size is not None:
            return self
        return dataclasses.replace(self, object=dataclasses.replace(self.object, size=2 * N))

    def check(self) -> None:
        check_number("n_train", self.n_train, low=1, integer=True)
        check_number("oversampling", self.oversampling, low=1, high=16, integer=True)
        check_number("pixel_subsamples", self.pixel_subsamples, low=1, high=9, integer=True)
        if self.pixel_subsamples % 2 == 0:
            raise fail("pixel_subsamples", self.pixel_subsamples,
                       "must be odd (the points sit symmetrically about each pixel's centre)")
        if self.noise_seed is not None:
            check_number("noise_seed", self.noise_seed, low=0, integer=True)
        if self.source == DataSource.file:
            self._resolve_file()

    def _resolve_file(self) -> None:
        """A measured scan's file: it must exist and be one we read; its pattern count becomes
        ``n_train`` and its sha256 ``digest`` (checked against a digest set by hand)."""
        from ptycho.config.files import measured_file_summary  # numpy, h5py: only for a file

        if not self.path:
            raise fail("path", self.path, "data.source=file needs data.path=<file.cxi|.npz>")
        if Path(self.path).suffix.lower() not in MEASURED_SUFFIXES:
            raise fail("path", self.path, f"must be one of {list(MEASURED_SUFFIXES)} (CXI in "
                       "HDF5, or PtychoPINN's NPZ)")
        if not Path(self.path).is_file():
            raise fail("path", self.path, "file not found")
        try:
            patterns, digest = measured_file_summary(self.path)
        except ValueError as error:
            raise fail("path", self.path, str(error)) from None
        if self.digest is not None and self.digest != digest:
            raise fail("digest", self.digest, f"the file {self.path} has sha256 {digest}: it "
                       "is not the file this study was set up with")
        object.__setattr__(self, "digest", digest)
        object.__setattr__(self, "n_train", patterns)
        if self.design != Design.reconstruct:
            raise fail("design", str(self.design), "a measured scan is one scan: data.source="
                       "file reconstructs it (design reconstruct)")


@dataclass(frozen=True)
class TrainConfig(Section):
    epochs: int = 50
    """Maximum; early stopping may end sooner."""
    batch_size: int = 16
    """Groups per optimiser step."""
    learning_rate: float = 5e-4
    """Adam (1e-3 oscillates with this generator, measured)."""
    validation_fraction: float = 0.05
    """Groups held out for ``val_loss``."""
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_learning_rate: float = 1e-4
    schedule: Schedule = Schedule.plateau
    warmup_fraction: float = 0.05
    """``cosine``: share of the steps spent warming up from a tenth of ``learning_rate``."""
    early_stopping_patience: int = 5
    """Best weights restored. More than twice ``plateau_patience``: a lowered learning rate gets
    epochs to pay off (measured: with 3, the quickstart's g=1 NLL job at 1e4 stopped at epoch 11
    on a noisy validation loss and scored amplitude SSIM 0.75; run on, it improved to epoch 24 and
    0.87)."""
    min_delta: float = 1e-5
    """Least decrease of the monitored loss that counts as an improvement (plateau schedule and
    early stopping). The networks train on dose-scaled losses (``ptycho.training.dose_scale``:
    the PINN's NLL in nats per photon, its MAE relative to the mean amplitude), so this means the
    same at every dose. 1e-5 is what wave 1's absolute 1e-4 meant at the quickstart's 1e4
    photons (N=32: about 10 photons per pixel)."""
    jit_compile: JitCompile = JitCompile.auto
    dtype_policy: DtypePolicy = DtypePolicy.float32

    def check(self) -> None:
        check_number("epochs", self.epochs, low=1, integer=True)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("learning_rate", self.learning_rate, low=0, low_open=True)
        check_number("validation_fraction", self.validation_fraction, low=0, high=0.5)
        check_number("min_delta", self.min_delta, low=0)
        check_number("plateau_factor", self.plateau_factor, low=0, low_open=True, high=1)
        check_number("plateau_patience", self.plateau_patience, low=0, integer=True)
        check_number("min_learning_rate", self.min_learning_rate, low=0)
        check_number("warmup_fraction", self.warmup_fraction, low=0, high=0.5)
        check_number("early_stopping_patience", self.early_stopping_patience, low=0, integer=True)


@dataclass(frozen=True)
class EvalConfig(Section):
    keep_fraction: float = 0.3
    """Central part of each patch stitched, fraction of N (at least the scan step is kept)."""
    border: int = 4
    """Pixels trimmed from the scanned region."""
    phase_alignment: PhaseAlignment = PhaseAlignment.plane
    subpixel_registration: bool = False
    stitch_weighting: StitchWeighting = StitchWeighting.probe
    """How overlapping patches are averaged in the stitch: ``probe`` weights each patch pixel by
    the probe intensity ``|P|²`` (the light that measured it), ``uniform`` weights the central
    part evenly (wave 1). The scored region is the same for both (docs/physics.md §8.1)."""
    phase_sync: PhaseSync = PhaseSync.auto
    """Before stitching a network's patches, set each patch's constant phase (which no
    diffraction pattern measures): ``overlap`` by agreement with its overlapping neighbours,
    ``likelihood`` then by the measured counts of the whole scan, ``none`` not at all
    (docs/physics.md §8.1); ``auto`` (the default): ``likelihood`` when ``train.epochs`` is at
    least :data:`LIKELIHOOD_SYNC_EPOCHS` (10), else ``overlap``. Validation replaces ``auto`` by
    its choice. Iterative arms reconstruct one object and do not need it."""
    batch_size: int = 64
    """Inference batch (groups)."""
    n_diffraction: int = 4
    """Patterns shown in the diffraction figure (not part of the config hash)."""
    crb: bool = False
    """Compute the Cramér–Rao bound of the test scan (docs/physics.md §11): ``amp_mse_crb``,
    ``phase_mse_crb`` and the efficiencies ``*_crb_efficiency`` (not part of the config hash).
    Off by default, so a single run or a 1-epoch check does not pay for it; the study presets
    that plot it (quickstart, dose_response) turn it on, and a sweep computes it once per scan
    (it does not depend on the dose)."""
    crb_samples: int = 16
    """Hutchinson probes per part where the bound is matrix-free (above
    ``ptycho.evaluation.limit.DENSE_LIMIT`` parameters)."""
    truth_free: TruthFree = TruthFree.auto
    """Also score without the truth (docs/physics.md §13.3): reconstruct two interleaved halves
    of the scan with the same arm (``halfsplit_*_frc_halfbit``: their FRC at the ½-bit
    threshold, a fraction of Nyquist) and compare with a reference reconstruction of the
    full-dose data (``ref_*``). It costs two more reconstructions of half the scan each.
    ``auto``: on for measured data (``data.source=file``), off for simulated; validation
    resolves it (not part of the config hash)."""
    reference: str = "lsqml"
    """The arm (a ``model.kind``, at its default settings) that reconstructs the full-dose data
    once per scan, cached; ``none``: no reference."""
    reference_dose: float = 1e6
    """Simulated data: the dose of the reference's scan (the same object, positions and noise
    seed); measured data use the file's full dose."""

    def check(self) -> None:
        check_number("keep_fraction", self.keep_fraction, low=0, low_open=True, high=1)
        check_number("border", self.border, low=0, integer=True)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("n_diffraction", self.n_diffraction, low=1, integer=True)
        check_number("crb_samples", self.crb_samples, low=2, integer=True)
        check_number("reference_dose", self.reference_dose, low=1)


@dataclass(frozen=True)
class TrackingConfig(Section):
    uri: str | None = None
    """``None``: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/outputs/mlflow.db``."""
    artifact_location: str | None = None
    """``None``: beside a SQLite store (``<folder>/mlartifacts``); the server's for http."""
    experiment: str = "default"
    """One MLflow experiment per study."""
    log_model: bool = True
    """Store the trained model folder as an artifact."""
    stale_after_s: float = 600.0
    """A RUNNING run with no heartbeat this long (its process on another host) counts as dead on
    resume: marked FAILED and its job run again. Same host: a dead process id suffices."""
    system_metrics_s: float = 10.0
    """Sampling interval (s) of MLflow's system metrics on each job run (CPU, memory; GPU where
    there is one): the UI's System metrics tab. 0: off."""

    def check(self) -> None:
        if self.uri is not None:
            check_tracking_uri("uri", self.uri)
        if not str(self.experiment).strip():
            raise fail("experiment", self.experiment, "must not be empty")
        # Heartbeats come every 60 s: anything shorter than three would call live runs stale.
        check_number("stale_after_s", self.stale_after_s, low=180)
        check_number("system_metrics_s", self.system_metrics_s, low=0)


def check_tracking_uri(key: str, uri: str) -> str:
    """A tracking URI MLflow can open: a scheme from :data:`TRACKING_SCHEMES` (``sqlite:///…``,
    ``http://host:port``, …) or a plain folder path; raises :class:`ConfigError` otherwise."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if "://" in uri and scheme not in TRACKING_SCHEMES:
        raise fail(key, uri, f"unsupported tracking URI scheme {scheme!r}; use one of "
                    f"{[f'{s}://' for s in TRACKING_SCHEMES]} or a folder path")
    return uri

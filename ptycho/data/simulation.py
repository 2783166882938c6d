"""Simulated train/test datasets from one spec, and their cache on disk.

Everything that determines the data is in :class:`SimulationSpec`; its hash keys the cache, so a
sweep over gridsize, loss or model at one (N, dose, seed) simulates once. Gridsize is not part of
the key: grouping happens after simulation.

Designs (``data.design``): ``reconstruct`` simulates one scan, which is both the training and the
test set (``pair.test is pair.train``); ``generalize`` adds a test scan of an independent object
realisation with the training scan's geometry (same number of positions, same region).

Seeds: ``seed`` fixes the object(s) and the scan positions, ``noise_seed`` (default: ``seed``) the
Poisson noise; train and test get independent streams of each (``numpy.random.SeedSequence``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptycho import physics
from ptycho.checks import check_dose, check_patch_size
from ptycho.config import CONDITION_SECTIONS, DataConfig, ObjectConfig, ProbeStart, ScanConfig
from ptycho.data.dataset import DetectorModel, DiffractionData, simulate, simulate_exact
from ptycho.data.npz import load_npz, save_npz
from ptycho.data.objects import make_object
from ptycho.data.probe import estimate_probe, guessed_probe_settings, make_probe
from ptycho.data.scan import make_positions, perturb_positions

__all__ = ["CACHE_FORMAT", "DataSpec", "DatasetPair", "SimulationSpec", "cache_key",
           "load_or_simulate", "make_datasets"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 3
"""Bump when the simulator's numbers change: old cache entries are then never matched."""

@dataclass(frozen=True)
class SimulationSpec:
    """Everything that determines a simulated train/test pair: the patch size, the dose, the
    seed and the job's ``data`` section (its ``cache`` settings do not enter the key).

    An object size of ``None`` becomes ``2·N`` (:meth:`ptycho.config.DataConfig.for_patch`).
    """

    N: int
    dose: float
    seed: int
    data: DataConfig

    def __post_init__(self) -> None:
        check_patch_size(self.N)
        # A float dose: 10000 and 1e4 are the same simulation and the same cache key.
        object.__setattr__(self, "dose", check_dose(self.dose))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        object.__setattr__(self, "data", self.data.for_patch(self.N))
        if self.obj.kind != "npz" and self.obj.size < self.N + 1:
            raise ValueError(
                f"object.size={self.obj.size} is smaller than a patch of N={self.N} "
                f"(needs >= {self.N + 1})"
            )

    # Short names for the data section's fields (the tests use them too).
    @property
    def obj(self) -> ObjectConfig:
        return self.data.object

    @property
    def scan(self) -> ScanConfig:
        return self.data.scan

    @property
    def n_train(self) -> int:
        return self.data.n_train

    @property
    def effective_noise_seed(self) -> int:
        return self.seed if self.data.noise_seed is None else int(self.data.noise_seed)

    def fingerprint(self) -> dict[str, Any]:
        """JSON-able description of the data: the spec with file inputs named by content hash."""
        return {"format": CACHE_FORMAT, "N": self.N, "dose": self.dose, "n_train": self.n_train,
                "design": str(self.data.design), "seed": self.seed,
                "noise_seed": self.effective_noise_seed, "obj": self.obj.fingerprint(),
                "probe": self.data.probe.fingerprint(),
                "scan": {k: getattr(self.scan, k) for k in self.scan.__dataclass_fields__},
                **({} if self.data.simulator == "bilinear" else {"simulator": {
                    "kind": str(self.data.simulator), "oversampling": self.data.oversampling,
                    "pixel_subsamples": self.data.pixel_subsamples}}),
                **self._conditions()}

    def make(self) -> DatasetPair:
        """Simulate the pair (:func:`make_datasets`)."""
        return make_datasets(self)

    def _conditions(self) -> dict[str, Any]:
        """The experiment's conditions that are not ideal (an ideal one adds nothing: the
        datasets simulated before conditions existed keep their key)."""
        conditions = {}
        for name in CONDITION_SECTIONS:
            section = getattr(self.data, name)
            if section != type(section)():
                conditions[name] = dataclasses.asdict(section)  # enums: JSON strings
        return conditions


@dataclass(frozen=True, eq=False)
class DatasetPair:
    """The training scan and the scored test scan (the same object with ``reconstruct``)."""

    train: DiffractionData
    test: DiffractionData

    @property
    def reconstructs(self) -> bool:
        """Whether the test set is the training scan itself (``data.design=reconstruct``)."""
        return self.test is self.train


class DataSpec(typing.Protocol):
    """What keys a cache entry and makes its datasets: :class:`SimulationSpec`, or a measured
    scan's :class:`ptycho.data.measured.MeasuredSpec`."""

    def fingerprint(self) -> dict[str, Any]: ...

    def make(self) -> DatasetPair: ...


def cache_key(spec: DataSpec) -> str:
    """sha256 (hex, 24 chars) of the spec's fingerprint."""
    blob = json.dumps(spec.fingerprint(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _seeds(entropy: int, salt: int, count: int) -> list[int]:
    state = np.random.SeedSequence([int(entropy), salt]).generate_state(count, dtype=np.uint32)
    return [int(value) for value in state]


def make_datasets(spec: SimulationSpec) -> DatasetPair:
    """Simulate the train and test sets of ``spec`` (no cache), with the experiment's
    conditions: true positions off the nominal ones, the detector, the probe guess."""
    obj_seed, train_scan_seed, test_scan_seed, test_obj_seed = _seeds(spec.seed, 0x0B1EC7, 4)
    train_noise_seed, test_noise_seed = _seeds(spec.effective_noise_seed, 0x9015E, 2)
    error_seeds = _seeds(spec.seed, 0x9051, 2)  # the position errors' own streams
    data = spec.data
    K = data.oversampling if data.simulator == "exact" else 1
    probe = make_probe(data.probe, spec.N, K)
    detector = _detector(data, spec.N)
    fingerprint = spec.fingerprint()
    scans = [("train", make_object(spec.obj, obj_seed, K), train_scan_seed, train_noise_seed)]
    if data.design == "generalize":
        scans.append(("test", make_object(spec.obj, test_obj_seed, K), test_scan_seed,
                      test_noise_seed))
    sets = []
    for (split, split_obj, scan_seed, noise_seed), error_seed in zip(scans, error_seeds,
                                                                     strict=False):
        shape = (split_obj.shape[0] // K, split_obj.shape[1] // K)  # the reconstruction grid
        nominal = make_positions(spec.scan, spec.n_train, shape, spec.N, seed=scan_seed)
        positions = perturb_positions(nominal, data.position_error, shape, spec.N,
                                      seed=error_seed)
        metadata = {"split": split, "spec": fingerprint}
        if K == 1 and data.simulator != "exact":
            made = simulate(split_obj, probe, positions, dose=spec.dose, seed=noise_seed,
                            metadata=metadata, detector=detector)
        else:
            made = simulate_exact(split_obj, probe, positions, oversampling=K,
                                  pixel_subsamples=data.pixel_subsamples, dose=spec.dose,
                                  seed=noise_seed, metadata=metadata, detector=detector)
        if not data.position_error.exact:
            made = dataclasses.replace(made, nominal_positions=nominal)
        if data.probe_guess.kind != ProbeStart.exact:
            made = dataclasses.replace(made, probe_start=_probe_start(data, made, spec.N, K))
        sets.append(made)
    return DatasetPair(train=sets[0], test=sets[-1])


def _detector(data: DataConfig, N: int) -> DetectorModel:
    settings = data.detector
    mask = physics.beamstop_mask(N, settings.beamstop_radius)
    return DetectorModel(physics.Detector(mask, settings.background), settings.saturation,
                         settings.read_noise)


def _probe_start(data: DataConfig, made: DiffractionData, N: int, K: int) -> np.ndarray:
    """The probe the reconstructors start from (``data.probe_guess``), sampled as the truth
    they are scored against is (block-averaged from the finer grid, peak 1, for ``exact``)."""
    if data.probe_guess.kind == ProbeStart.estimate:
        return estimate_probe(made.counts, made.detector.mask, made.detector.background)
    guess = make_probe(guessed_probe_settings(data.probe_guess, data.probe), N, K)
    if K > 1:
        guess = physics.block_average(guess, K)
    return (guess / np.abs(guess).max()).astype(np.complex64)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_entry(entry: Path) -> DatasetPair:
    """Load a cache entry, verifying every file against the manifest; raise on any defect."""
    manifest = json.loads((entry / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        if _sha256(entry / name) != digest:
            raise ValueError(f"checksum mismatch for {name}")
    train = load_npz(entry / "train.npz")
    # reconstruct: one scan, stored once.
    test = load_npz(entry / "test.npz") if "test.npz" in manifest["files"] else train
    return DatasetPair(train=train, test=test)


def _write_entry(entry: Path, pair: DatasetPair, spec: DataSpec) -> None:
    """Write to a temporary folder and rename it into place, so a reader never sees half a file."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        files = {}
        parts = [("train.npz", pair.train)]
        if not pair.reconstructs:
            parts.append(("test.npz", pair.test))
        for name, data in parts:
            save_npz(staging / name, data)
            files[name] = _sha256(staging / name)
        manifest = {"spec": spec.fingerprint(), "files": files, "created": time.time()}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(staging, entry)
        except OSError:
            # Another process wrote the same entry first: keep theirs (same content by key).
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_or_simulate(spec: DataSpec,
                     cache_dir: str | Path | None) -> tuple[DatasetPair, bool]:
    """The datasets of ``spec``, from ``cache_dir`` when a valid entry exists, else made
    (simulated, or a measured scan loaded and thinned: ``spec.make()``) and stored there. A
    truncated or corrupt entry is detected (checksums), logged and rebuilt.

    Returns:
        ``(pair, cache_hit)``.
    """
    if cache_dir is None:
        return spec.make(), False
    entry = Path(cache_dir) / cache_key(spec)
    if (entry / "manifest.json").is_file():
        try:
            pair = _read_entry(entry)
            log.info("dataset cache hit %s", entry)
            return pair, True
        except Exception as error:  # any defect means: do not trust it, rebuild
            log.warning("dataset cache entry %s is unreadable (%s): rebuilding", entry, error)
    elif entry.exists():
        log.warning("dataset cache entry %s has no manifest: rebuilding", entry)
    pair = spec.make()
    try:
        _write_entry(entry, pair, spec)
    except OSError as error:  # full disk, read-only folder: the job can go on without the cache
        log.warning("could not store dataset cache entry %s (%s); continuing without caching",
                    entry, error)
    return pair, False

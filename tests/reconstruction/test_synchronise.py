"""Phase synchronisation: the constant phase no pattern measures, found from the overlaps and
then from the measured counts, before the stitch."""

from __future__ import annotations

import numpy as np
import pytest

import ptycho.reconstruction.synchronise as synchronise
from ptycho import physics
from ptycho.data import disc_probe
from ptycho.reconstruction.synchronise import likelihood_offsets, phase_offsets
from tests.helpers import stitch_and_score
from tests.reconstruction.test_stitch import _Scan


@pytest.fixture(scope="module")
def test_set() -> _Scan:
    """Whole-pixel positions: bilinear extraction is then exact."""
    return _Scan(32, 96, 300, seed=0, whole_pixels=True)


# --- phase synchronisation: the constant phase no pattern measures ---------------------------


def _scrambled(data: _Scan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The patches, each times its own random constant phase ``e^{-iφ_k}``, and ``φ``."""
    phases = np.random.default_rng(seed).uniform(-np.pi, np.pi, len(data.patches))
    return (data.patches * np.exp(-1j * phases)[:, None, None]).astype(np.complex64), phases


def _circular_residual(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """``found − expected`` wrapped, less its circular mean (a global phase is not measured)."""
    difference = np.exp(1j * (found - expected))
    return np.angle(difference * np.conj(difference.mean()))


@pytest.mark.parametrize(("whole_pixels", "tolerance"), [(True, 1e-4), (False, 0.03)])
def test_phase_offsets_recover_random_constant_phases(whole_pixels: bool,
                                                      tolerance: float) -> None:
    """Exact patches with arbitrary offsets: the synchronisation finds them from the overlaps
    alone (exactly on whole pixels; to bilinear accuracy off them), and the stitch is as good
    as the truth's: phase SSIM 0.02 without it."""
    data = _Scan(32, 96, 300, seed=2, whole_pixels=whole_pixels)
    scrambled, phases = _scrambled(data, seed=0)
    weight = np.abs(disc_probe(32)) ** 2
    residual = _circular_residual(phase_offsets(scrambled, data.positions, weight), phases)
    print(f"whole pixels {whole_pixels}: largest residual {np.abs(residual).max():.2e} rad")
    assert np.abs(residual).max() < tolerance

    probe = disc_probe(32)
    truth = stitch_and_score(data.patches, data.positions, data.obj, phase_sync="none",
                             probe=probe)
    synced = stitch_and_score(scrambled, data.positions, data.obj, phase_sync="overlap",
                              probe=probe)
    unsynced = stitch_and_score(scrambled, data.positions, data.obj, phase_sync="none",
                                probe=probe)
    assert unsynced.metrics["phase_ssim"] < 0.2
    for key in ("amp_ssim", "phase_ssim"):
        assert synced.metrics[key] == pytest.approx(truth.metrics[key], abs=1e-3), key
    assert synced.extra["phase_sync_offset_std"] > 1.0  # uniform phases: a wide spread


def test_phase_offsets_leave_consistent_patches_alone(test_set) -> None:
    offsets = phase_offsets(test_set.patches, test_set.positions, np.ones((32, 32)))
    assert np.abs(offsets).max() < 1e-4


def test_patches_whose_illumination_does_not_overlap_keep_their_phases() -> None:
    """Steps wider than the probe's disc: the patches share only the probe's faint tails, which
    say nothing; synchronising on them once scrambled exact patches (amplitude MAE 0.12)."""
    data = _Scan(64, 256, 64, seed=7, whole_pixels=False)  # 27 px steps, a 22 px disc
    offsets = phase_offsets(data.patches, data.positions, np.abs(disc_probe(64)) ** 2)
    assert np.all(offsets == 0.0)


def test_each_connected_part_of_a_scan_is_synchronised_on_its_own() -> None:
    """Two scans that do not overlap share no information: each is solved alone and centred."""
    data = _Scan(32, 160, 625, seed=4, whole_pixels=True)  # 5.3 px steps
    x = data.positions[:, 0]
    keep = (x < 60) | (x > 100)  # a gap wider than a patch splits the scan in two
    patches, positions = data.patches[keep], data.positions[keep]
    scrambled = (patches * np.exp(-1j * np.linspace(-3, 3, len(patches)))[:, None, None])
    found = phase_offsets(scrambled, positions, np.abs(disc_probe(32)) ** 2)
    for part in (positions[:, 0] < 60, positions[:, 0] > 100):
        residual = _circular_residual(found[part], np.linspace(-3, 3, len(patches))[part])
        assert np.abs(residual).max() < 1e-4
        assert abs(np.angle(np.exp(1j * found[part]).mean())) < 1e-9


def test_the_dense_and_the_iterative_eigensolver_agree(monkeypatch) -> None:
    data = _Scan(32, 96, 40, seed=6, whole_pixels=False)
    scrambled, _ = _scrambled(data, seed=1)
    weight = np.abs(disc_probe(32)) ** 2
    assert len(scrambled) <= synchronise._DENSE_SYNC
    dense = phase_offsets(scrambled, data.positions, weight)
    monkeypatch.setattr(synchronise, "_DENSE_SYNC", 0)
    iterative = phase_offsets(scrambled, data.positions, weight)
    assert np.abs(_circular_residual(iterative, dense)).max() < 1e-6


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: phase_offsets(d.patches, d.positions, np.ones((16, 16))),
         r"weight must have shape \(32, 32\), got \(16, 16\)"),
        (lambda d: phase_offsets(d.patches, d.positions, np.zeros((32, 32))),
         "weight must be finite, >= 0 and not all zero"),
        (lambda d: phase_offsets(d.patches, d.positions[:3], np.ones((32, 32))),
         r"positions must have shape \(300, 2\)"),
        (lambda d: stitch_and_score(d.patches, d.positions, d.obj),
         r"the stitch needs the \(32, 32\) probe, got None"),
        (lambda d: stitch_and_score(d.patches, d.positions, d.obj, phase_sync="none",
                                    stitch_weighting="probe", probe=np.ones((16, 16))),
         r"needs the \(32, 32\) probe, got \(16, 16\)"),
        (lambda d: stitch_and_score(d.patches, d.positions, d.obj, stitch_weighting="central"),
         r"stitch_weighting must be one of \['probe', 'uniform'\], got 'central'"),
        (lambda d: stitch_and_score(d.patches, d.positions, d.obj, phase_sync=True,
                                    probe=disc_probe(32)),
         r"phase_sync must be one of \['none', 'overlap', 'likelihood', 'auto'\], got True"),
        (lambda d: stitch_and_score(d.patches, d.positions, d.obj, phase_sync="auto",
                                    probe=disc_probe(32)),
         r"phase_sync='auto' is resolved by the job's config"),
        (lambda d: stitch_and_score(d.patches, d.positions, d.obj, probe=disc_probe(32)),
         r"phase_sync='likelihood' needs the measured counts \(300, 32, 32\), got None"),
        (lambda d: likelihood_offsets(d.patches, d.positions, disc_probe(32),
                                      np.ones((300, 32, 32)), d.obj.shape, keep=10, weight=None,
                                      initial=np.zeros(3)),
         r"initial must have shape \(300,\), got \(3,\)"),
        (lambda d: likelihood_offsets(d.patches, d.positions, disc_probe(32),
                                      np.ones((300, 32, 32)), d.obj.shape, keep=10, weight=None,
                                      patterns=np.arange(5)),
         r"patterns must have shape \(300,\), got \(5,\)"),
        (lambda d: likelihood_offsets(d.patches, d.positions, disc_probe(32),
                                      -np.ones((300, 32, 32)), d.obj.shape, keep=10, weight=None),
         "counts must be finite and >= 0"),
    ],
)
def test_bad_synchronisation_inputs_are_refused(test_set, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(test_set)


# --- phase synchronisation by the measured counts --------------------------------------------


def _counts(data: _Scan, probe: np.ndarray, dose: float, seed: int) -> np.ndarray:
    """Poisson counts of the true patches at ``dose`` photons per pattern."""
    expected = physics.expected_counts_at_dose(data.patches, probe, dose)
    return physics.poisson_counts(expected, seed).numpy()


@pytest.mark.parametrize("weighting", ["probe", "uniform"])
def test_likelihood_offsets_recover_random_constant_phases(weighting: str) -> None:
    """Exact patches with arbitrary offsets and the counts they were measured with: the offsets
    that best explain the counts are the true ones (to the noise), from a poor start, under
    either stitch; each patch given twice (as g > 1 groups share patterns) changes nothing."""
    data = _Scan(32, 96, 300, seed=2, whole_pixels=True)
    scrambled, phases = _scrambled(data, seed=0)
    probe = disc_probe(32)
    counts = _counts(data, probe, 1e6, seed=1)
    start = phases + np.random.default_rng(3).normal(0.0, 0.3, len(phases))  # 0.3 rad off
    weight = np.abs(probe) ** 2 if weighting == "probe" else None
    found, info = likelihood_offsets(scrambled, data.positions, probe, counts, data.obj.shape,
                                     keep=10, weight=weight, initial=start)
    residual = _circular_residual(found, phases)
    print(f"largest residual {np.abs(residual).max():.2e} rad, {info}")
    assert np.abs(residual).max() < 0.03  # measured: 0.017 (rms 0.005) at 10⁶ photons
    assert info["nll_gain_per_photon"] > 0
    assert abs(np.angle(np.exp(1j * found).mean())) < 1e-9  # no global phase chosen
    if weighting == "probe":
        twice = np.concatenate([np.arange(300), np.arange(300)])
        again, repeat = likelihood_offsets(
            scrambled[twice], data.positions[twice], probe, counts[twice], data.obj.shape,
            keep=10, weight=weight, initial=start[twice], patterns=twice)
        assert repeat["nll_gain_per_photon"] == pytest.approx(info["nll_gain_per_photon"],
                                                              rel=0.05)
        assert np.abs(_circular_residual(again[:300], phases)).max() < 0.03


def test_the_counts_correct_offsets_that_the_overlaps_get_wrong() -> None:
    """Patches like a g=1 network's (measured on the quickstart): right near the centre, their
    phase contrast shrunk towards the patch's own mean where the probe is faint, each with its
    own constant. Agreement in the overlaps (the faint edges) passes the shrinkage on to the
    whole stitched phase; the counts see the stitched object under every probe and do not."""
    N, dose = 32, 1e5
    data = _Scan(N, 96, 300, seed=2, whole_pixels=False)
    probe = disc_probe(N)
    light = np.abs(probe) ** 2 / np.abs(probe).max() ** 2
    phase = np.angle(data.patches)
    mean = np.angle((light * data.patches).sum(axis=(1, 2)))[:, None, None]
    shrink = 0.3 + 0.7 * light  # 1 at the centre, 0.3 in the dark
    relative = np.angle(np.exp(1j * (phase - mean)))
    shrunk = np.abs(data.patches) * np.exp(1j * (mean + shrink * relative))
    scrambled = (shrunk * np.exp(-1j * _scrambled(data, seed=0)[1])[:, None, None])
    scrambled = scrambled.astype(np.complex64)
    counts = _counts(data, probe, dose, seed=1)
    overlap = stitch_and_score(scrambled, data.positions, data.obj, phase_sync="overlap",
                               probe=probe)
    likelihood = stitch_and_score(scrambled, data.positions, data.obj, probe=probe, counts=counts)
    scores = {"overlap": overlap.metrics["phase_ssim"],
              "likelihood": likelihood.metrics["phase_ssim"]}
    print(scores, likelihood.extra)
    assert likelihood.extra["overlap_sync_phase_ssim"] == pytest.approx(scores["overlap"])
    assert likelihood.extra["phase_sync_nll_gain_per_photon"] > 0
    assert scores["likelihood"] > scores["overlap"] + 0.05  # measured: 0.977 vs 0.812


def _shrunk(data: _Scan, probe: np.ndarray) -> np.ndarray:
    """The patches as a g=1 network leaves them (see the test above): phase contrast shrunk
    where the probe is faint, each with a random constant."""
    light = np.abs(probe) ** 2 / np.abs(probe).max() ** 2
    phase = np.angle(data.patches)
    mean = np.angle((light * data.patches).sum(axis=(1, 2)))[:, None, None]
    relative = np.angle(np.exp(1j * (phase - mean)))
    shrunk = np.abs(data.patches) * np.exp(1j * (mean + (0.3 + 0.7 * light) * relative))
    return (shrunk * np.exp(-1j * _scrambled(data, seed=0)[1])[:, None, None]).astype(
        np.complex64)


def test_the_likelihoods_gradient_is_the_derivative_of_its_value() -> None:
    """The hand-written gradient (one adjoint product) against central differences of the
    value, along random directions; and the map's adjoint is its adjoint."""
    data = _Scan(16, 48, 40, seed=4, whole_pixels=False)
    probe = disc_probe(16)
    counts = _counts(data, probe, 1e5, seed=2)
    fields = synchronise._StitchedFields(
        _shrunk(data, probe), data.positions, probe, counts, data.obj.shape, keep=6,
        weight=np.abs(probe) ** 2, patterns=np.arange(len(data.positions)))
    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi, np.pi, len(data.positions))
    _, gradient = fields.value_and_gradient(theta)
    for _ in range(3):
        direction = rng.standard_normal(len(theta))
        step = 1e-3
        ahead = fields.value_and_gradient(theta + step * direction)[0]
        behind = fields.value_and_gradient(theta - step * direction)[0]
        assert (ahead - behind) / (2 * step) == pytest.approx(gradient @ direction, rel=2e-3)
    z = np.exp(1j * rng.uniform(-np.pi, np.pi, len(theta))).astype(np.complex64)
    far = (rng.standard_normal(counts.shape) + 1j * rng.standard_normal(counts.shape)).astype(
        np.complex64)
    left = np.vdot(far.astype(np.complex128), fields.forward(z).numpy())
    right = np.vdot(fields.adjoint(far).numpy().astype(np.complex128), z)
    assert left == pytest.approx(right, rel=1e-4)


def test_the_likelihood_synchronisation_converges_where_longer_runs_end() -> None:
    """From the overlap offsets, on patches like a network's: the test stops it with a
    converged flag, the NLL falls at every iteration, and a run ten times as strict ends at
    nearly the same NLL and the same offsets (what the stopping rule gives up is small)."""
    N = 32
    data = _Scan(N, 96, 300, seed=2, whole_pixels=False)
    probe = disc_probe(N)
    patches = _shrunk(data, probe)
    counts = _counts(data, probe, 1e5, seed=1)
    start = phase_offsets(patches, data.positions, np.abs(probe) ** 2)
    settings = dict(keep=10, weight=np.abs(probe) ** 2, initial=start)
    found, info = likelihood_offsets(patches, data.positions, probe, counts, data.obj.shape,
                                     **settings)
    strict, reference = likelihood_offsets(patches, data.positions, probe, counts,
                                           data.obj.shape, relative_tolerance=1e-5,
                                           max_iterations=1000, **settings)
    values = [row[1] for row in info["trace"]]
    print({k: v for k, v in info.items() if k != "trace"}, reference["iterations"])
    assert info["converged"] == 1.0 and info["iterations"] < 200
    assert np.all(np.diff(values) <= 1e-12)  # L-BFGS's line search only accepts decreases
    assert info["gradient_norm"] < 0.05 * info["trace"][0][2]
    given_up = reference["nll_gain_per_photon"] - info["nll_gain_per_photon"]
    assert 0 <= given_up < 0.02 * reference["nll_gain_per_photon"]
    assert np.abs(_circular_residual(found, strict)).max() < 0.1  # measured 0.066 rad

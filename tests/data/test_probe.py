"""The focused probe: its sampling and normalisation against independent calculations (the Airy
pattern, a direct Fresnel–Hankel integral), its aberrations, its errors and its settings' place
in the dataset key and the config hash."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special

from ptycho.config import ConfigError, ProbeConfig, validate
from ptycho.data import make_probe
from ptycho.data.probe import focused_probe

N = 64


def _focused(**settings: object) -> np.ndarray:
    return focused_probe(N, ProbeConfig(kind="focused", **settings))  # type: ignore[arg-type]


def _fresnel_hankel(r: np.ndarray, radius: float, stop: float, defocus: float) -> np.ndarray:
    """The probe of a rotationally symmetric pupil by direct quadrature, not by an FFT:
    ``u(r) = ∫_stop^1 exp(i·defocus·ρ²) J0(2π·radius·ρ·r/N) ρ dρ`` (the 2-D inverse Fourier
    integral of the pupil in polar coordinates), normalised to its peak."""
    def part(function, at: float) -> float:
        return integrate.quad(lambda rho: function(defocus * rho**2)
                              * special.j0(2 * np.pi * radius * rho * at / N) * rho,
                              stop, 1, limit=200)[0]

    values = np.array([part(np.cos, at) + 1j * part(np.sin, at) for at in r])
    return values / np.abs(values).max()


def test_in_focus_it_is_the_airy_pattern_of_its_aperture() -> None:
    """``2 J1(v)/v`` with ``v = 2π·aperture_radius·r/N``: the aperture's radius on the detector
    sets the focus's size in sample pixels (first zero at ``0.61·N/aperture_radius``)."""
    probe = _focused(aperture_radius=10.0, defocus=0.0)
    r = np.arange(0, 16)
    v = 2 * np.pi * 10.0 * np.maximum(r, 1e-9) / N
    airy = np.abs(2 * special.j1(v) / v)
    np.testing.assert_allclose(np.abs(probe[N // 2, N // 2 + r]), airy, atol=0.01)
    assert np.abs(probe).max() == pytest.approx(1.0) and np.abs(probe[N // 2, N // 2]) == 1.0
    first_zero = 0.61 * N / 10.0
    assert np.abs(probe[N // 2, N // 2 + round(first_zero)]) < 0.02


@pytest.mark.parametrize(("stop", "defocus"), [(0.0, 4.0), (0.3, 4.0), (0.3, -2.5)])
def test_a_defocused_zone_plate_probe_matches_a_direct_fresnel_integral(stop: float,
                                                                        defocus: float) -> None:
    radius = 12.0  # the DFT is a Riemann sum of the integral: a wider pupil samples it finer
    probe = _focused(aperture_radius=radius, central_stop=stop, defocus=defocus)
    r = np.arange(0, 20)
    expected = _fresnel_hankel(r, radius, stop, defocus)
    along = probe[N // 2, N // 2 + r]
    along = along / np.abs(probe).max()
    # the global phase is free (compare after removing it at the centre ring)
    rotation = np.exp(-1j * np.angle(np.vdot(expected, along)))
    np.testing.assert_allclose(along * rotation, expected, atol=0.02)
    # rotationally symmetric: the column through the centre is the row
    np.testing.assert_allclose(probe[N // 2 + r, N // 2], probe[N // 2, N // 2 + r], atol=1e-5)


def test_its_far_field_is_the_aperture_and_defocus_of_either_sign_is_a_mirror() -> None:
    """Our far field ``fftshift(FFT2(P))/N`` of the probe is the pupil: light only inside the
    aperture's radius (and outside the stop), evenly bright there; the opposite defocus is the
    complex conjugate (the same intensity on the other side of the focus)."""
    probe = _focused(aperture_radius=8.0, central_stop=0.25, defocus=3.0)
    far = np.abs(np.fft.fftshift(np.fft.fft2(probe)))
    k = np.hypot(*np.mgrid[:N, :N] - N // 2)
    dark = far[(k > 8.8) | (k < 0.25 * 8 - 0.8)]  # outside the aperture, inside the stop
    assert dark.max() < 1e-3 * far.max()
    inside = far[(k > 0.25 * 8 + 0.8) & (k < 8 - 0.8)]
    assert inside.min() > 0.99 * inside.max()
    np.testing.assert_allclose(_focused(aperture_radius=8.0, central_stop=0.25, defocus=-3.0),
                               np.conj(probe), atol=1e-5)


def test_astigmatism_and_coma_break_the_symmetries_they_should() -> None:
    """Astigmatism stretches the probe along one axis and not the other (an ellipse, still
    centro-symmetric in intensity); coma makes it lopsided (its centroid moves along the
    coma's axis)."""
    rows, cols = np.mgrid[:N, :N] - N // 2

    def moments(probe: np.ndarray) -> tuple[float, float, float, float]:
        intensity = np.abs(probe) ** 2 / (np.abs(probe) ** 2).sum()
        return ((intensity * cols).sum(), (intensity * rows).sum(),
                (intensity * cols**2).sum(), (intensity * rows**2).sum())

    plain = moments(_focused(defocus=2.0))
    assert plain[2] == pytest.approx(plain[3], rel=1e-6)
    stretched = moments(_focused(defocus=2.0, astigmatism_x=2.0))
    assert abs(stretched[2] - stretched[3]) > 0.2 * plain[2]
    assert abs(stretched[0]) < 0.05 and abs(stretched[1]) < 0.05  # (the grid's unpaired edge)
    lopsided = moments(_focused(defocus=0.0, coma_x=2.0))
    assert abs(lopsided[0]) > 0.3 and abs(lopsided[1]) < 0.05


def test_a_probe_that_does_not_fit_its_patch_is_refused_naming_the_settings() -> None:
    with pytest.raises(ValueError, match=r"does not fit the N=64 patch: .* lower "
                                         r"data.probe.defocus=40 or raise "
                                         r"data.probe.aperture_radius=8"):
        _focused(defocus=40.0)
    with pytest.raises(ValueError, match=r"aperture_radius=40 must be in \(0, N/2 = 32\)"):
        _focused(aperture_radius=40.0)
    with pytest.raises(ConfigError, match=r"data.probe.aperture_radius=8.0: must be < N/2 = 8"):
        validate({"N": 16, "data": {"probe": {"kind": "focused"}}})
    with pytest.raises(ConfigError, match=r"central_stop=1.0: must be < 1"):
        validate({"data": {"probe": {"kind": "focused", "central_stop": 1.0}}})


def test_the_exact_simulator_samples_the_same_band_limited_probe_finer() -> None:
    spec = ProbeConfig(kind="focused", aperture_radius=6.0, defocus=3.0, coma_y=1.0)
    coarse = make_probe(spec, 32)
    fine = make_probe(spec, 32, oversampling=3)
    assert fine.shape == (96, 96)
    np.testing.assert_allclose(fine[1::3, 1::3], coarse, atol=1e-5)  # block centres


def test_its_settings_enter_the_key_and_hash_only_of_a_focused_probe() -> None:
    """A disc's (or a user's) dataset key and config hash are those of before the focused probe
    existed (the default job's hash is pinned in tests/test_config.py); a focused probe's
    settings change both."""
    assert "defocus" not in ProbeConfig().fingerprint()
    assert ProbeConfig(defocus=9.0).fingerprint() == ProbeConfig().fingerprint()
    assert validate({"data": {"probe": {"defocus": 9.0}}}).config_hash == validate({}).config_hash
    focused = {"data": {"probe": {"kind": "focused"}}}
    other = {"data": {"probe": {"kind": "focused", "defocus": 3.0}}}
    assert validate(focused).config_hash not in (validate(other).config_hash,
                                                 validate({}).config_hash)
    assert ProbeConfig(kind="focused").fingerprint()["defocus"] == 4.0


def test_a_dataset_is_simulated_with_the_focused_probe_at_its_dose() -> None:
    from ptycho.data import make_datasets
    from ptycho.pipeline import simulation_spec

    job = validate({"N": 32, "dose": 1e4, "data": {"object": {"size": 64}, "n_train": 32,
                                                   "probe": {"kind": "focused", "defocus": 3.0,
                                                             "central_stop": 0.2}}})
    pair = make_datasets(simulation_spec(job))
    np.testing.assert_array_equal(pair.train.probe, focused_probe(32, job.data.probe))
    assert pair.train.counts.sum(axis=(1, 2)).mean() == pytest.approx(1e4, rel=0.05)


def test_the_probe_figure_shows_amplitude_phase_and_far_field_per_probe() -> None:
    from ptycho import viz

    probes = {"disc": make_probe(ProbeConfig(), N), "focused": _focused(),
              "zone plate, coma": _focused(central_stop=0.3, coma_x=1.5)}
    figure = viz.probe_figure(probes, title="probes")
    images = [axes for axes in figure.axes if axes.get_images()]
    assert len(images) == 9
    assert [axes.get_title() for axes in images[:3]] == [
        "disc: amplitude", "focused: amplitude", "zone plate, coma: amplitude"]

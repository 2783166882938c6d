"""Our conventions mapped to pty-chi's (``ptycho.arms.ptychi``), checked against
pty-chi's own patch extraction and forward model, pixel by pixel. A mirrored, transposed or
half-pixel-shifted mapping fails these tests; each test shows that on the wrong mapping too."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import physics
from ptycho.arms import ptychi
from ptycho.arms import ptychi as conventions
from ptycho.config import Device
from ptycho.config.arms.base import PtychiSettings

N = 16
SHAPE = (40, 44)  # not square: rows and columns cannot be confused silently


def forward_counts(obj: np.ndarray, positions: np.ndarray, probe: np.ndarray,
                   scale: float) -> tuple[np.ndarray, np.ndarray]:
    """pty-chi's own forward model (ePIE's task) on our inputs, mapped by the conventions of
    ``ptycho.arms.ptychi``: the expected counts and the object patches it extracts.

    Args:
        obj: ``(H, W)`` complex object.
        positions: ``(M, 2)`` float ``(x, y)`` patch centres, object pixels (ours).
        probe: ``(N, N)`` complex probe (ours).
        scale: photon scale ``s`` (counts ``λ = s² |F|²``).

    Returns:
        ``(expected (M, N, N) float32 with DC at (N/2, N/2), patches (M, N, N) complex64)``.
    """
    api, task_class = ptychi.load_ptychi()
    import torch

    probe = np.asarray(probe)
    M, N = len(positions), probe.shape[0]
    settings = PtychiSettings(iterations=1, batch_size=max(1, M), device=Device.cpu)
    with ptychi._quiet(), torch.no_grad(), ptychi._task(
        api, task_class, api.EPIEOptions(), settings, counts=np.ones((M, N, N), np.float32),
        positions=positions, probe=ptychi.ptychi_probe(probe, scale),
        initial_object=np.asarray(obj, np.complex64), device="cpu", seed=0,
    ) as task:
        intensities, patches = task.reconstructor.forward_model(
            torch.arange(M), return_object_patches=True)
        expected = np.fft.fftshift(intensities.detach().cpu().numpy(), axes=(-2, -1))
        patches = patches.detach().cpu().numpy()
    return expected.astype(np.float32), patches.reshape(M, N, N).astype(np.complex64)


def _ours_patches(obj: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return physics.Ptychography(np.ones((N, N)), positions, obj.shape).patches(obj).numpy()


def _ours_counts(obj: np.ndarray, positions: np.ndarray, probe: np.ndarray,
                 scale: float) -> np.ndarray:
    """Our operator's expected counts ``s² |A o|²``."""
    return scale**2 * physics.Ptychography(probe, positions, obj.shape).intensities(obj).numpy()


def _asymmetric_probe(seed: int = 0) -> np.ndarray:
    """An off-centre blob with a phase ramp and a tail: no mirror or transpose symmetry."""
    yy, xx = np.mgrid[0:N, 0:N].astype(np.float64)
    blob = np.exp(-((yy - 6.0) ** 2 / 8.0 + (xx - 9.5) ** 2 / 4.0))
    tail = 0.5 * np.exp(-((yy - 11.0) ** 2 + (xx - 4.0) ** 2) / 3.0)
    phase = 0.35 * xx - 0.2 * yy + 0.05 * xx * yy
    noise = 0.05 * np.random.default_rng(seed).standard_normal((N, N))
    return ((blob + tail + noise) * np.exp(1j * phase)).astype(np.complex64)


def test_a_bright_pixel_lands_where_our_patch_puts_it() -> None:
    obj = np.zeros(SHAPE, np.complex64)
    row, col = 21, 17
    obj[row, col] = 1.0 + 0.5j
    positions = np.array([[col, row], [col + 3, row - 2], [col - 5, row + 4]], np.float64)
    ours = _ours_patches(obj, positions)
    _, theirs = forward_counts(obj, positions, _asymmetric_probe(), 1.0)
    for k in range(len(positions)):
        expected_at = np.unravel_index(np.argmax(np.abs(ours[k])), (N, N))
        assert expected_at == (row - positions[k, 1] + N // 2, col - positions[k, 0] + N // 2)
        assert np.unravel_index(np.argmax(np.abs(theirs[k])), (N, N)) == expected_at
    np.testing.assert_allclose(theirs, ours, atol=1e-5)

    # The wrong mappings move or smear the pixel: these are what the test catches.
    shifted = positions + 0.5  # pty-chi fed our centres unchanged (a half-pixel shift)
    _, half = forward_counts(obj, shifted, _asymmetric_probe(), 1.0)
    assert np.abs(half - ours).max() > 0.1
    swapped = positions[:, ::-1].copy()  # (x, y) read as (row, col)
    _, transposed = forward_counts(obj, swapped, _asymmetric_probe(), 1.0)
    assert np.abs(transposed - ours).max() > 0.5


def test_pty_chi_forward_model_gives_our_counts_with_an_asymmetric_probe() -> None:
    rng = np.random.default_rng(1)
    amplitude = 0.6 + 0.4 * rng.random(SHAPE)
    obj = (amplitude * np.exp(1j * rng.uniform(-1, 1, SHAPE))).astype(np.complex64)
    positions = np.array([[12, 14], [20, 15], [27, 22], [16, 25], [30, 28]], np.float64)
    probe = _asymmetric_probe()
    scale = conventions.flat_field_scale(probe, 1e5)
    ours = _ours_counts(obj, positions, probe, scale)
    theirs, _ = forward_counts(obj, positions, probe, scale)
    assert ours.sum(axis=(1, 2)).mean() == pytest.approx(1e5, rel=0.5)  # photons, not units
    np.testing.assert_allclose(theirs, ours, rtol=2e-4, atol=1e-3 * ours.max())

    # A mirrored or transposed probe, or a half-pixel shift, changes the counts well beyond that.
    for wrong_probe, wrong_positions in ((probe[::-1, ::-1], positions), (probe.T, positions),
                                         (probe, positions + 0.5)):
        wrong, _ = forward_counts(obj, wrong_positions, wrong_probe, scale)
        assert np.abs(wrong - ours).max() > 0.02 * ours.max()


def test_the_flat_field_scale_gives_an_empty_beam_its_dose() -> None:
    probe = _asymmetric_probe()
    scale = conventions.flat_field_scale(probe, 2.5e4)
    counts = _ours_counts(np.ones(SHAPE, np.complex64), np.array([[20.0, 20.0]]), probe, scale)
    assert counts.sum() == pytest.approx(2.5e4, rel=1e-4)
    with pytest.raises(ValueError, match="dose must be positive"):
        conventions.flat_field_scale(probe, 0.0)
    with pytest.raises(ValueError, match="no finite energy"):
        conventions.flat_field_scale(np.zeros((N, N), np.complex64), 1.0)

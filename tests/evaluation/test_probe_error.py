"""A refined probe's gauges (a complex constant, a phase ramp, a translation) are removed before
its error is taken: a known probe is recovered exactly (docs/physics.md §12.4)."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.config import ProbeConfig
from ptycho.data.probe import disc_probe, focused_probe
from ptycho.evaluation import align_probe, probe_error, transform_probe

FOCUSED = ProbeConfig(kind="focused", aperture_radius=8.0, astigmatism_x=1.0, coma_y=0.5)


@pytest.mark.parametrize(("shift", "ramp", "constant"), [
    ((1.3, -0.7), (0.4, -0.25), 0.7 - 0.3j),
    ((-2.0, 0.0), (0.0, 1.0), 2j),
    ((0.0, 0.0), (0.0, 0.0), 1.0),
])
def test_gauge_alignment_recovers_a_known_probe_exactly(shift, ramp, constant) -> None:
    truth = focused_probe(64, FOCUSED)
    estimate = constant * transform_probe(truth, shift, ramp)
    aligned, error = align_probe(estimate, truth)
    assert error < 1e-6
    np.testing.assert_allclose(aligned, truth, atol=1e-5)


def test_a_different_probe_keeps_its_error() -> None:
    truth = focused_probe(64, FOCUSED)
    other = focused_probe(64, ProbeConfig(kind="focused", aperture_radius=8.0, defocus=5.0))
    assert 0.2 < probe_error(other, truth) < 1.0
    assert probe_error(disc_probe(64), truth) > 0.5
    assert probe_error(np.zeros_like(truth), truth) == 1.0
    with pytest.raises(ValueError, match="one shape"):
        probe_error(truth[:32, :32], truth)

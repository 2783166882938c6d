"""The report's statistics: the median's bootstrap interval covers the truth as often as it
says, and a dose ratio's interval contains a known factor."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.dose_response.analyse import comparisons, dose_efficiency, summarise
from experiments.dose_response.statistics import crossing_dose, dose_ratio, median_ci


def test_the_median_interval_covers_the_true_median_in_at_least_90_percent_of_studies() -> None:
    """200 simulated cells of 6 replicates (the dose_response preset's 3 seeds x 2 noise
    seeds) from a skewed distribution with a known median: the 95% interval covers it in at
    least 90% of them."""
    rng = np.random.default_rng(7)
    true_median = 0.7 - 0.05 * math.log(2)  # of 0.7 - Exponential(scale 0.05)
    covered = 0
    for study in range(200):
        values = 0.7 - rng.exponential(0.05, 6)
        low, high = median_ci(values, resamples=999, seed=study)
        covered += low <= true_median <= high
    print(f"coverage {covered / 200:.3f} over 200 studies of 6 replicates")
    assert covered / 200 >= 0.90


def test_the_median_interval_of_one_value_or_equal_values() -> None:
    assert all(math.isnan(v) for v in median_ci([0.5]))
    assert median_ci([0.5, 0.5, np.nan]) == (0.5, 0.5)
    low, high = median_ci([0.4, 0.6])
    assert 0.4 <= low <= high <= 0.6


def test_crossings_are_interpolated_in_log_dose() -> None:
    doses = np.array([1e2, 1e3, 1e4])
    assert crossing_dose(doses, np.array([0.2, 0.4, 0.8]), 0.6) == (pytest.approx(10 ** 3.5), "=")
    assert crossing_dose(doses, np.array([0.7, 0.8, 0.9]), 0.6) == (1e2, "<=")
    assert math.isnan(crossing_dose(doses, np.array([0.1, 0.2, 0.3]), 0.6)[0])


def _curve(shift_decades: float, rng: np.random.Generator, replicates: int = 4
           ) -> list[tuple[float, np.ndarray]]:
    """A quality that rises with log10 dose, reaching 0.5 at 10^(3 + shift), with noise."""
    doses = 10.0 ** np.arange(1.0, 7.01, 0.5)
    return [(dose, 1 / (1 + np.exp(-1.5 * (math.log10(dose) - 3 - shift_decades)))
             + rng.normal(0, 0.03, replicates)) for dose in doses]


def test_the_dose_ratio_interval_contains_a_known_factor() -> None:
    """Arm b needs 10x the dose of arm a (its curve is a's shifted by one decade): the ratio
    b/a is 10^1 within its interval, in each of 20 simulated studies with most intervals
    narrower than half a decade."""
    rng = np.random.default_rng(3)
    contained, widths = 0, []
    for study in range(20):
        ratio = dose_ratio(_curve(1.0, rng), _curve(0.0, rng), 0.5, resamples=300, seed=study)
        contained += ratio.log10_low <= 1.0 <= ratio.log10_high
        widths.append(ratio.log10_high - ratio.log10_low)
        assert ratio.reached == 1.0
    print(f"known factor 10 inside {contained}/20 intervals; median width "
          f"{np.median(widths):.2f} decades")
    assert contained >= 18
    assert np.median(widths) < 0.5


def _runs(shifts: dict[str, tuple[float, str, str]], rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for arm, (shift, loss, model) in shifts.items():
        for dose, values in _curve(shift, rng):
            for seed, value in enumerate(values):
                rows.append({"run_id": f"{arm}{dose}{seed}", "arm": arm, "N": 32,
                             "gridsize": np.nan if model == "lsqml" else 1, "loss": loss,
                             "model": model, "data": "", "dose": dose, "seed": seed,
                             "noise_seed": seed, "status": "FINISHED", "degenerate": False,
                             "amp_ssim": value})
    return pd.DataFrame(rows)


def test_the_report_tables_give_ratios_with_intervals() -> None:
    """NLL needs 10x less dose than MAE and 10^0.5 less than LSQML, by construction."""
    rng = np.random.default_rng(11)
    runs = _runs({"N32 g1 poisson_nll pinn": (0.0, "poisson_nll", "pinn"),
                  "N32 g1 mae pinn": (1.0, "mae", "pinn"),
                  "N32 lsqml": (0.5, "", "lsqml")}, rng)
    summary = summarise(runs, ["amp_ssim"])
    table = dose_efficiency(summary, "amp_ssim", 0.5, runs).set_index("arm")
    nll = table.loc["N32 g1 poisson_nll pinn"]
    assert nll["vs_lsqml_log10_low"] <= -0.5 <= nll["vs_lsqml_log10_high"]
    pair = comparisons(runs, "amp_ssim", 0.5)
    # the two PINN arms differ in the loss alone; each differs from LSQML in the model alone
    # (LSQML uses neither gridsize nor loss: its runs leave them blank)
    assert sorted(pair["differs_in"]) == ["loss", "model", "model"]
    assert set(pair[pair["differs_in"] == "model"]["reference"]) == {"N32 lsqml"}
    row = pair[pair["differs_in"] == "loss"].iloc[0]
    # arms are ordered by name: mae first, so the ratio is mae/nll = 10
    assert row["arm"] == "N32 g1 mae pinn" and row["log10_low"] <= 1.0 <= row["log10_high"]
    assert "10^(" in row["statement"]


def test_no_ratio_from_bounds_and_no_interval_from_a_few_crossing_resamples() -> None:
    """Both arms already at the quality at their lowest dose: that dose is only a bound, so
    there is no ratio (not 10^0 with a zero-width interval). And where both cross in fewer than
    95% of resamples, the ratio gets no interval."""
    rng = np.random.default_rng(5)
    always = [(dose, 0.9 + rng.normal(0, 0.01, 3)) for dose in (1e3, 1e4)]
    ratio = dose_ratio(always, always, 0.8, resamples=100)
    assert math.isnan(ratio.log10_ratio) and math.isnan(ratio.log10_low)
    assert ratio.text().startswith("no ratio")
    # a cell whose replicates straddle the threshold widely: crossings come and go
    shaky = [(1e2, np.array([0.2, 0.3, 0.4])), (1e3, np.array([0.3, 0.55, 0.9])),
             (1e4, np.array([0.3, 0.9, 0.95]))]
    steady = [(1e2, np.array([0.3, 0.31, 0.29])), (1e3, np.array([0.7, 0.71, 0.69])),
              (1e4, np.array([0.9, 0.91, 0.89]))]
    wobbly = dose_ratio(shaky, steady, 0.6, resamples=300)
    assert wobbly.reached < 0.95
    assert math.isnan(wobbly.log10_low) and "no interval" in wobbly.text()


def test_a_threshold_must_be_a_higher_is_better_metric() -> None:
    from experiments.dose_response.report import _thresholds

    assert _thresholds(["amp_ssim=0.7", "amp_frc50_nyquist=0.3"]) == {
        "amp_ssim": 0.7, "amp_frc50_nyquist": 0.3}
    for bad in ("amp_nrmse=0.1", "amp_mse=1e-3", "amp_resolution_px=2", "nonsense=1"):
        with pytest.raises(ValueError, match="higher-is-better"):
            _thresholds([bad])
    with pytest.raises(ValueError, match="must be a number"):
        _thresholds(["amp_ssim=high"])

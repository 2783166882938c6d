"""The report's statistics: the median's bootstrap interval covers the truth as often as it
says, and a dose ratio's interval contains a known factor."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.dose_response.analyse import (
    bias_variance,
    comparisons,
    dose_efficiency,
    paired,
    summarise,
)
from experiments.dose_response.statistics import (
    MEAN_COVERAGE,
    crossing_dose,
    dose_ratio,
    interval_label,
    median_ci,
    median_interval,
    paired_difference,
)


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


def test_below_five_replicates_the_interval_is_the_range_and_says_so() -> None:
    values = [0.61, 0.55, 0.58, 0.6]
    assert median_interval(values) == (0.55, 0.61, "range")
    low, high, label = median_interval([*values, 0.57])
    assert low <= 0.58 <= high
    assert label == "bootstrap 95% (measured coverage 0.94 at n=5)"
    assert interval_label(11, MEAN_COVERAGE).endswith("0.91 at n=10)")
    assert median_interval([math.nan])[2] == "range" and math.isnan(median_interval([])[0])


def test_the_paired_bootstrap_covers_as_often_as_its_label_says_at_five_seeds() -> None:
    """600 studies of 5 paired seeds whose differences are Normal(0.02, 0.03): the seed-level
    bootstrap's nominal 95% interval covers the true 0.02 as often as MEAN_COVERAGE[5] says
    (measured on 2000 studies by bench/interval_coverage.py), within 3 standard errors."""
    rng = np.random.default_rng(2027)
    covered = 0
    for study in range(600):
        differences = rng.normal(0.02, 0.03, 5)
        result = paired_difference(dict(enumerate(differences)), dict.fromkeys(range(5), 0.0),
                                   higher_is_better=True, seed=study, resamples=999)
        covered += result.low <= 0.02 <= result.high
        assert result.label.startswith("bootstrap 95%")
    coverage, expected = covered / 600, MEAN_COVERAGE[5]
    print(f"paired bootstrap coverage at n=5: {coverage:.3f} (labelled {expected})")
    assert abs(coverage - expected) < 3 * math.sqrt(expected * (1 - expected) / 600)
    assert coverage < 0.95  # why it is labelled: a bootstrap of 5 means is too narrow


def test_paired_differences_count_wins_failures_and_test_them() -> None:
    """Six seeds, a better on all: the exact tests' smallest p at n=6 (2/64), a the winner.
    Lower-is-better metrics turn the direction; a failed run loses its seed."""
    a = {seed: 0.8 + 0.01 * seed for seed in range(6)}
    b = {seed: 0.7 + 0.02 * seed for seed in range(6)}
    result = paired_difference(a, b, higher_is_better=True)
    assert (result.n, result.a_wins, result.b_wins) == (6, 6, 0)
    assert result.sign_p == pytest.approx(1 / 32) and result.wilcoxon_p == pytest.approx(1 / 32)
    assert result.winner == "a" and result.mean == pytest.approx(0.1 - 0.005 * 5)
    assert paired_difference(a, b, higher_is_better=False).winner == "b"
    failed = paired_difference({**a, 0: math.nan}, b, higher_is_better=True)
    assert (failed.n, failed.a_wins, failed.b_wins, failed.a_failed) == (5, 5, 1, 1)
    assert failed.winner == "" and failed.sign_p == pytest.approx(7 / 32)
    assert failed.wilcoxon_p > result.wilcoxon_p  # the failure is ranked as the largest loss
    few = paired_difference({0: 0.9, 1: 0.8}, {0: 0.85, 1: 0.7, 2: 0.1}, higher_is_better=True)
    assert few.label == "range" and (few.low, few.high) == pytest.approx((0.05, 0.1))


def test_the_paired_table_pairs_seeds_averages_noise_seeds_and_keeps_collapses() -> None:
    """Two arms over 6 seeds x 2 noise seeds: a seed's two runs are one pair (averaged);
    a degenerate run makes its seed a loss of its arm, not a missing pair."""
    rows = []
    for seed in range(6):
        for noise in range(2):
            for arm, model, value in (("N32 g1 poisson_nll pinn", "pinn", 0.9),
                                      ("N32 lsqml", "lsqml", 0.8)):
                rows.append({"run_id": f"{model}{seed}{noise}", "arm": arm, "N": 32,
                             "gridsize": np.nan if model == "lsqml" else 1,
                             "loss": "" if model == "lsqml" else "poisson_nll", "model": model,
                             "data": "", "dose": 1e4, "seed": seed, "noise_seed": noise,
                             "status": "FINISHED", "degenerate": model == "pinn" and seed == 5,
                             "amp_ssim": value + 0.01 * noise, "amp_nrmse": 1 - value})
    table = paired(pd.DataFrame(rows), ["amp_ssim", "amp_nrmse"]).set_index("metric")
    ssim = table.loc["amp_ssim"]
    assert (ssim["seeds"], ssim["arm_wins"], ssim["reference_wins"]) == (5, 5, 1)
    assert ssim["arm_failed"] == 1 and ssim["difference"] == pytest.approx(0.1)
    assert ssim["winner"] == "" and "no consistent winner" in ssim["statement"]
    nrmse = table.loc["amp_nrmse"]
    assert nrmse["better"] == "lower" and nrmse["arm_wins"] == 5


def test_bias_and_variance_over_noise_seeds_add_up_to_the_mse_and_find_a_known_bias() -> None:
    """Two arms, each reconstructing one truth from 4 noise draws: one unbiased with noise of
    std 0.1, one biased by 0.05 with std 0.02. The split recovers bias² (0 and 0.0025) and the
    variance (0.01 and 0.0004), and bias² + variance is the runs' mean MSE."""
    rng = np.random.default_rng(4)
    truth = rng.uniform(0.5, 1.0, (40, 40))
    groups = {}
    for arm, bias, noise in (("noisy", 0.0, 0.1), ("biased", 0.05, 0.02)):
        for seed in range(3):
            groups[(arm, 1e4, seed)] = [
                {"amplitude": truth + bias + rng.normal(0, noise, truth.shape),
                 "amplitude_truth": truth, "phase": truth + rng.normal(0, noise, truth.shape),
                 "phase_truth": truth} for _ in range(4)]
    table = bias_variance(groups).set_index("arm")
    noisy, biased = table.loc["noisy"], table.loc["biased"]
    assert noisy["seeds"] == 3 and noisy["noise_replicates"] == 4
    assert noisy["amp_bias2"] == pytest.approx(0.0, abs=3e-4)
    assert noisy["amp_variance"] == pytest.approx(0.01, rel=0.05)
    assert biased["amp_bias2"] == pytest.approx(0.0025, rel=0.05)
    assert biased["amp_variance"] == pytest.approx(0.0004, rel=0.05)
    for row in (noisy, biased):
        assert row["amp_bias2"] + row["amp_variance"] == pytest.approx(row["amp_mse"], rel=0.02)

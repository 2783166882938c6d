"""The dose-response report: tables equal the runs' metrics, failures counted, files written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from experiments.dose_response.analyse import EFFICIENCY_COLUMNS, dose_efficiency, summarise
from experiments.dose_response.fetch import TRUTH, truth_label, truth_labels
from experiments.dose_response.report import make_report
from ptycho.evaluation import METRIC_KEYS
from ptycho.runner.tracking import ROLE_TAG
from tests.cli import copy_store


def test_dose_efficiency_finds_known_crossings() -> None:
    summary = pd.DataFrame({
        "arm": ["nll"] * 4 + ["mae"] * 4 + ["never"] * 2 + ["always"] * 2,
        "dose": [1e3, 1e4, 1e5, 1e6] * 2 + [1e3, 1e4] * 2,
        "amp_frc50_mean": [2.0, 6.0, 10.0, 12.0,     # crosses 8 halfway (in log) 1e4 -> 1e5
                           1.0, 2.0, 4.0, 8.0,        # reaches 8 exactly at 1e6
                           1.0, 2.0,
                           9.0, 9.5],
    })
    table = dose_efficiency(summary, "amp_frc50", 8.0).set_index("arm")
    assert table.loc["nll", "dose_reached"] == pytest.approx(10**4.5)
    assert table.loc["nll", "bound"] == "="
    assert table.loc["mae", "dose_reached"] == pytest.approx(1e6)
    assert math.isnan(table.loc["never", "dose_reached"])
    assert table.loc["never", "bound"] == "not reached"
    assert table.loc["always", "dose_reached"] == 1e3 and table.loc["always", "bound"] == "<="
    # the published comparison: NLL reaches the resolution at ~10x less dose than MAE
    ratio = table.loc["mae", "dose_reached"] / table.loc["nll", "dose_reached"]
    assert ratio == pytest.approx(10**1.5)


def test_dose_efficiency_compares_every_arm_with_lsqml_at_its_n() -> None:
    summary = pd.DataFrame({
        "arm": ["N32 g1 poisson_nll pinn"] * 2 + ["N32 lsqml"] * 2 + ["N64 g1 mae pinn"] * 2,
        "N": [32, 32, 32, 32, 64, 64],
        "dose": [1e3, 1e4] * 3,
        "amp_frc50_mean": [4.0, 9.0, 9.0, 12.0, 9.0, 9.5],
    })
    table = dose_efficiency(summary, "amp_frc50", 8.0).set_index("arm")
    assert table.loc["N32 lsqml", "vs_lsqml"] == pytest.approx(1.0)
    pinn = table.loc["N32 g1 poisson_nll pinn"]
    assert pinn["vs_lsqml"] == pytest.approx(pinn["dose_reached"] / 1e3)  # LSQML: <= 1e3
    assert pinn["vs_lsqml"] > 1  # this PINN needs more photons than LSQML
    assert math.isnan(table.loc["N64 g1 mae pinn", "vs_lsqml"])  # no LSQML arm at N=64


def test_summary_counts_failures_apart_and_ignores_their_metrics() -> None:
    runs = pd.DataFrame({
        "run_id": list("abcd"), "arm": ["x"] * 4, "N": 16, "gridsize": 1, "loss": "mae",
        "model": "pinn", "dose": [1e3] * 4, "seed": [0, 1, 2, 3],
        "status": ["FINISHED", "FINISHED", "FAILED", "KILLED"],
        "amp_ssim": [0.2, 0.4, 99.0, np.nan],
    })
    row = summarise(runs, ["amp_ssim"]).iloc[0]
    assert (row["n_runs"], row["n_finished"], row["n_failed"]) == (4, 2, 2)
    assert row["amp_ssim_mean"] == pytest.approx(0.3)
    assert row["amp_ssim_median"] == pytest.approx(0.3)
    assert (row["amp_ssim_min"], row["amp_ssim_max"], row["amp_ssim_n"]) == (0.2, 0.4, 2)
    assert 0.2 <= row["amp_ssim_ci_low"] <= row["amp_ssim_ci_high"] <= 0.4


def test_a_collapsed_run_is_counted_drawn_apart_and_kept_out_of_the_median(tmp_path) -> None:
    """Four replicates of one cell, one of which collapsed (flat amplitude, as the MAE arms at
    dose 1e2 did): it is counted in the collapse rate, kept out of the median and interval, and
    drawn as its own marker."""
    from experiments.dose_response.render import summary_text
    from ptycho import viz

    runs = pd.DataFrame({
        "run_id": list("abcd"), "arm": ["x"] * 4, "N": 16, "gridsize": 1, "loss": "mae",
        "model": "pinn", "data": "", "dose": [1e2] * 4, "seed": [0, 1, 2, 3],
        "status": ["FINISHED"] * 4, "degenerate": [False, False, False, True],
        "amp_ssim": [0.60, 0.62, 0.64, 0.01],
    })
    row = summarise(runs, ["amp_ssim"]).iloc[0]
    assert (row["n_finished"], row["n_degenerate"]) == (4, 1)
    assert row["collapse_rate"] == pytest.approx(0.25)
    assert row["amp_ssim_n"] == 3 and row["amp_ssim_median"] == pytest.approx(0.62)
    assert row["amp_ssim_min"] == pytest.approx(0.60)  # the collapsed 0.01 is not in it
    assert row["amp_ssim_ci_low"] >= 0.60
    assert "degenerate 1" in summary_text(summarise(runs, ["amp_ssim"]), ["amp_ssim"])
    one = summary_text(summarise(runs.iloc[:1], ["amp_ssim"]), ["amp_ssim"])
    assert "n 1 " in one and "amp_ssim 0.600" in one and "[" not in one  # no range of one
    figure = viz.dose_response_figure(summarise(runs, ["amp_ssim"]), pd.DataFrame(
        {"arm": ["x"], "dose": [1e2], "n_failed": [0]}), metrics=[("amp_ssim", "SSIM")],
        degenerate=runs[runs["degenerate"]])
    axes = figure.axes[0]
    triangles = [line for line in axes.get_lines() if line.get_marker() == "v"]
    assert len(triangles) == 1 and list(triangles[0].get_ydata()) == [0.01]
    median_line = next(line for line in axes.get_lines() if line.get_label() == "x")
    assert list(median_line.get_ydata()) == [pytest.approx(0.62)]


@pytest.mark.slow
def test_report_of_a_smoke_sweep_matches_the_store(smoke_sweep, tmp_path: Path) -> None:
    shared, done = smoke_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report: " in done.stdout  # the end-of-sweep callback produced one too
    copy_store(shared, tmp_path)  # this test marks runs FAILED: on its own copy
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("smoke")
    parent = client.search_runs([experiment.experiment_id],
                                filter_string=f"tags.`{ROLE_TAG}` = 'sweep'")[0]
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 8
    crashed = children[0]  # as if its machine died: the report must count it as failed
    client.set_terminated(crashed.info.run_id, "FAILED")
    client.set_tag(crashed.info.run_id, "error", "<script>alert('x')</script> & more")
    # a child that died before logging its params: counted as failed, not a crash of the report
    bare = client.create_run(experiment.experiment_id, run_name="died_early",
                             tags={"mlflow.parentRunId": parent.info.run_id})
    client.set_terminated(bare.info.run_id, "FINISHED")

    report = make_report(tracking_uri=uri, parent_run_id=parent.info.run_id,
                         out=tmp_path / "report")
    summary = pd.read_csv(report.folder / "summary.csv")
    runs = pd.read_csv(report.folder / "runs.csv")
    assert len(runs) == 9 and (runs["status"] == "FAILED").sum() == 2
    assert "no parameters logged" in runs.set_index("name").loc["died_early", "error"]
    summary = summary[summary["arm"] != "(unknown: no params)"]
    assert len(summary) == 4  # 2 losses x 2 doses, one arm per loss
    assert summary["n_failed"].sum() == 1 and summary["n_finished"].sum() == 7
    html = report.html.read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html  # escaped
    assert "<h2>Methods</h2>" in html and "bootstrap" in html
    # the two losses, paired by seed: two seeds give a range, and the crashed run lost its seed
    pairs = pd.read_csv(report.folder / "paired.csv")
    assert set(pairs["interval"]) == {"range"} and set(pairs["differs_in"]) == {"loss"}
    assert (pairs["arm_failed"] + pairs["reference_failed"]).max() == 1
    assert "Paired comparisons" in html and set(summary["interval"]) == {"range"}

    by_cell: dict[tuple[str, float], list] = {}
    collapsed: dict[tuple[str, float], int] = {}
    for child in children:
        if child.info.run_id == crashed.info.run_id:
            continue
        key = (child.data.params["loss"], float(child.data.params["dose"]))
        if child.data.tags["degenerate"] == "true":  # kept out of the statistics, counted
            collapsed[key] = collapsed.get(key, 0) + 1
            continue
        by_cell.setdefault(key, []).append(child.data.metrics)
    print("degenerate smoke runs per (loss, dose):", collapsed)
    for _, row in summary.iterrows():
        key = (row["loss"], row["dose"])
        values = by_cell.get(key, [])
        assert row["n_degenerate"] == collapsed.get(key, 0)
        assert row["n_finished"] == len(values) + collapsed.get(key, 0)
        for metric in METRIC_KEYS if values else ():
            observed = [m[metric] for m in values]
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(observed), rel=1e-9)
            assert row[f"{metric}_min"] == pytest.approx(min(observed), rel=1e-9)
            assert row[f"{metric}_max"] == pytest.approx(max(observed), rel=1e-9)
            assert row[f"{metric}_n"] == len(observed)
            assert row[f"{metric}_median"] == pytest.approx(np.median(observed), rel=1e-9)
            if len(observed) > 1 and np.ptp(observed) > 0:
                assert (row[f"{metric}_ci_low"] <= row[f"{metric}_median"]
                        <= row[f"{metric}_ci_high"])

    for name in ("dose_response.png", "reconstructions.png", "report.html", "report.md",
                 "runs.csv", "summary.csv", "dose_efficiency.csv", "comparisons.csv",
                 "paired.csv"):
        assert (report.folder / name).stat().st_size > 100, name
    assert (report.folder / "dose_response.png").stat().st_size > 20_000
    assert "data:image/png;base64," in report.html.read_text()
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/summary.csv", "report/dose_response.png"} <= logged

    # A sweep whose every run failed still gets its report: failures counted, nothing reached.
    for child in children:
        client.set_terminated(child.info.run_id, "FAILED")
    failed = make_report(tracking_uri=uri, parent_run_id=parent.info.run_id,
                         out=tmp_path / "all_failed")
    assert failed.summary["n_failed"].sum() == 9 and failed.summary["n_finished"].sum() == 0
    assert failed.efficiency.empty and failed.comparisons.empty
    assert list(failed.efficiency.columns) == EFFICIENCY_COLUMNS
    assert "none" not in failed.html.read_text().split("<h2>Failed runs</h2>")[1][:20]


def test_the_dose_response_figure_draws_the_bound_and_the_efficiency() -> None:
    from ptycho import viz

    doses = [1e2, 1e3, 1e4]
    rows = []
    for arm, factor in (("N32 g1 poisson_nll pinn", 3.0), ("N32 lsqml", 1.5)):
        for dose in doses:
            bound = {"amp_mse_crb_mean": 1.0 / dose, "phase_mse_crb_mean": 3.0 / dose}
            mse = {"amp_mse": factor / dose, "phase_mse": 3 * factor / dose}
            # the best constant image: below the bound at 1e2 (there the bound says nothing)
            row = {"arm": arm, "N": 32, "dose": dose, **bound, "amp_mse_constant_mean": 2e-3,
                   "phase_mse_constant_mean": 1e-2,
                   "amp_crb_efficiency_mean": 1 / factor, "phase_crb_efficiency_mean": 1 / factor,
                   "object_nll_excess_per_photon_mean": (factor - 2) * 1e-3,
                   "wilks_nll_excess_per_photon_mean": -1e-3}
            for key, value in mse.items():
                row.update({f"{key}_mean": value, f"{key}_min": value, f"{key}_max": value})
            rows.append(row)
    summary = pd.DataFrame(rows)
    figure = viz.dose_response_figure(summary, summary.assign(n_failed=0)[["arm", "dose",
                                                                          "n_failed"]])
    panels = {ax.get_ylabel(): ax for ax in figure.axes}
    for label, column in (("amplitude MSE", "amp_mse_crb_mean"),
                          ("phase MSE (rad²)", "phase_mse_crb_mean")):
        ax = panels[label]
        assert ax.get_yscale() == "log"
        lines = {line.get_label(): line for line in ax.get_lines()}
        bound = lines["Cramér–Rao bound N=32"]
        assert bound.get_linestyle() == "--"
        np.testing.assert_allclose(bound.get_ydata(), summary[column][:3])
        assert lines["best constant image N=32"].get_linestyle() == ":"
    efficiency = panels["Cramér–Rao efficiency (bound / MSE), where informative"]
    curves = [line.get_ydata() for line in efficiency.get_lines()][:-1]  # less the line at 1
    assert len(curves) == 4 and all(np.isnan(curve[0]) for curve in curves)  # not at 1e2
    assert sorted(round(float(curve[1]), 6) for curve in curves) == pytest.approx(
        sorted([1 / 3, 1 / 3, 1 / 1.5, 1 / 1.5]), abs=1e-6)
    # the scored object's fit: each arm against 0 and where a converged fit sits (Wilks)
    excess = panels["scored object's NLL − truth's (nats per photon)"]
    lines = {line.get_label(): line for line in excess.get_lines()}
    assert float(lines["converged fit (Wilks) N=32"].get_ydata()[0]) == pytest.approx(-1e-3)
    drawn = sorted(round(float(line.get_ydata()[0]), 6) for line in excess.get_lines())
    assert drawn == pytest.approx([-1e-3, -5e-4, 0.0, 1e-3], abs=1e-9)


def test_the_reconstruction_grid_has_one_truth_column_per_object_class() -> None:
    one = pd.DataFrame({"object": ["lines", "lines"]})
    two = pd.DataFrame({"object": ["grf", "cells", "grf"]})
    assert truth_labels(one) == [TRUTH] and truth_label(one, "lines") == TRUTH
    assert truth_labels(two) == [f"{TRUTH}: cells", f"{TRUTH}: grf"]
    assert truth_label(two, "grf") == f"{TRUTH}: grf"
    assert truth_labels(pd.DataFrame({"name": ["a"]})) == [TRUTH]  # a store without the axis


def test_reference_lines_are_per_object_class_and_a_missing_bound_is_said() -> None:
    """Two object classes are two scans: each has its own best constant image (a line each,
    named by its class); a sweep without the bound says so on the efficiency panel."""
    from ptycho import viz

    rows = [{"arm": f"N32 lsqml {kind}", "N": 32, "object": kind, "dose": dose,
             "amp_mse_mean": 1e-3, "amp_mse_constant_mean": constant}
            for kind, constant in (("cells", 4e-3), ("grf", 2e-3)) for dose in (1e3, 1e4)]
    summary = pd.DataFrame(rows)
    figure = viz.dose_response_figure(summary, summary.assign(n_failed=0)[["arm", "dose",
                                                                          "n_failed"]])
    panels = {ax.get_ylabel(): ax for ax in figure.axes}
    lines = {line.get_label(): line for line in panels["amplitude MSE"].get_lines()}
    assert float(lines["best constant image N=32 cells"].get_ydata()[0]) == 4e-3
    assert float(lines["best constant image N=32 grf"].get_ydata()[0]) == 2e-3
    efficiency = panels["Cramér–Rao efficiency (bound / MSE), where informative"]
    assert [text.get_text() for text in efficiency.texts] == [
        "no Cramér–Rao bound in this sweep (eval.crb=false)"]


def test_condition_costs_measure_each_condition_against_the_same_arms_ideal(tmp_path) -> None:
    """The dose a condition costs: the ideal arm reaches 0.4 at 1e4 (the middle dose); the
    same arm under positions off reaches it halfway (in log) between 1e4 and 1e6, i.e. at 10x
    the dose; under the detector never; a refined arm is measured against its own ideal."""
    from experiments.dose_response.analyse import condition_costs, refinement_errors
    from ptycho import viz

    curves = {("pinn", "", "ideal"): [0.2, 0.4, 0.6],
              ("pinn", "", "positions off"): [0.1, 0.3, 0.5],
              ("pinn", "", "detector"): [0.1, 0.2, 0.3],
              ("pinn", "refined probe", "ideal"): [0.3, 0.5, 0.7],
              ("pinn", "refined probe", "positions off"): [0.3, 0.5, 0.7]}
    rows = []
    for (base, refinement, condition), values in curves.items():
        label = base + (f" · {condition}" if condition != "ideal" or refinement else "") + (
            f" · {refinement}" if refinement else "")
        for dose, value in zip([1e3, 1e4, 1e6], values, strict=True):
            rows.append({"run_id": f"{label}{dose}", "arm": label, "N": 32, "gridsize": 1,
                         "loss": "poisson_nll", "model": base, "condition": condition,
                         "refinement": refinement, "dose": dose, "seed": 2,
                         "status": "FINISHED", "degenerate": False, "amp_frc50_nyquist": value,
                         "phase_frc50_nyquist": value / 2,
                         "position_error_given_rms": 0.7 if condition != "ideal" else np.nan,
                         "position_error_rms": 0.5 if condition != "ideal" else np.nan})
    runs = pd.DataFrame(rows)
    summary = summarise(runs, ["amp_frc50_nyquist", "phase_frc50_nyquist",
                               "position_error_given_rms", "position_error_rms"])
    table = condition_costs(summary, runs).set_index(["refinement", "condition"])
    errors = refinement_errors(summary)
    assert set(errors["condition"]) == {"positions off", "detector"}  # the ideal has none
    assert (errors["position_error_rms"] == 0.5).all() and len(errors) == 3 * 3
    assert table.loc[("none", "ideal"), "dose_cost"] == 1.0
    assert table.loc[("none", "ideal"), "reference_quality"] == pytest.approx(0.4)
    assert table.loc[("none", "positions off"), "dose_cost"] == pytest.approx(10.0)
    assert "-0.100" in table.loc[("none", "positions off"), "vs_ideal"]
    assert table.loc[("none", "detector"), "bound"] == "not reached"
    assert "more than 100x" in table.loc[("none", "detector"), "statement"]
    refined = table.loc[("refined probe", "positions off")]
    assert refined["reference_quality"] == pytest.approx(0.5)  # its own ideal's, at 1e4
    assert refined["dose_cost"] == pytest.approx(1.0)
    figure = viz.conditions_figure(summary)
    assert len(figure.axes) == 2 * 3  # two metrics × (ideal, positions off, detector)
    figure.savefig(tmp_path / "conditions.png")


def test_the_truth_free_table_measures_how_each_metric_tracks_the_truth(tmp_path) -> None:
    """Half-split FRC equal to the truth's FRC less 0.1 tracks it with r = 1 and a mean
    difference of -0.1; a reference SSIM unrelated to the truth's does not; a measured arm
    without a truth draws its dashed lines only and adds no row."""
    from experiments.dose_response.analyse import truth_free_agreement
    from ptycho import viz

    rows = []
    for arm, truth in (("pinn", True), ("lsqml", True), ("pinn measured", False)):
        for dose, frc, unrelated in zip([1e2, 1e3, 1e4, 1e5], [0.2, 0.4, 0.6, 0.8],
                                        [0.5, 0.2, 0.9, 0.1], strict=True):
            rows.append({"run_id": f"{arm}{dose}", "arm": arm, "dose": dose, "seed": 0,
                         "status": "FINISHED", "degenerate": False,
                         "amp_frc_halfbit_nyquist": frc if truth else np.nan,
                         "halfsplit_amp_frc_halfbit": frc - 0.1,
                         "amp_ssim": frc if truth else np.nan,
                         "ref_amp_ssim": unrelated})
    runs = pd.DataFrame(rows)
    table = truth_free_agreement(runs).set_index(["arm", "truth_free_metric"])
    assert ("pinn measured", "halfsplit_amp_frc_halfbit") not in table.index
    row = table.loc[("all arms", "halfsplit_amp_frc_halfbit")]
    assert row["runs"] == 8 and row["pearson"] == pytest.approx(1.0)
    assert row["mean_difference"] == pytest.approx(-0.1)
    assert "tracks amp_frc_halfbit_nyquist with r = 1.00" in row["statement"]
    assert abs(table.loc[("pinn", "ref_amp_ssim"), "spearman"]) < 1
    summary = summarise(runs, ["amp_frc_halfbit_nyquist", "halfsplit_amp_frc_halfbit",
                               "amp_ssim", "ref_amp_ssim"])
    figure = viz.truth_free_figure(summary)
    lines = figure.axes[0].get_lines()
    assert len(lines) == 2 + 2 + 1  # two arms with both, the measured one dashed only
    figure.savefig(tmp_path / "truth_free.png")

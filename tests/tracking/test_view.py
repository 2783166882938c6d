"""The UI's first view: every experiment carries the dose-response view, and its link opens
it (Model training, the chart view, grouped by arm, a log dose axis; docs/tracking.md)."""

from __future__ import annotations

import json
from pathlib import Path

from ptycho.runner.tracking import Tracker
from ptycho.runner.tracking.view import (
    DOSE_VIEW_TAG,
    VS_DOSE_METRICS,
    dose_view_link,
    dose_view_state,
    latest_study_link,
)


def test_the_view_groups_by_arm_and_draws_each_dose_metric_on_a_log_dose_axis() -> None:
    state = json.loads(dose_view_state())
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "arm"}]
    charts = state["compareRunCharts"]
    assert [c["metricKey"] for c in charts] == [f"vs_dose/{m}" for m in VS_DOSE_METRICS]
    assert {c["xAxisScaleType"] for c in charts} == {"log"}
    assert {c["type"] for c in charts} == {"LINE"} and state["isDirty"] and state["hideEmptyCharts"]
    assert {c["metricSectionId"] for c in charts} == {s["uuid"] for s in state[
        "compareRunSections"]}
    assert dose_view_link("http://h:5000/", "7") == (
        "http://h:5000/#/experiments/7/runs?workflowType=machine_learning&compareRunsMode=CHART"
        "&viewStateShareKey=dose-response")


def test_experiments_carry_the_view_and_the_latest_studys_link_opens_it(tmp_path: Path,
                                                                         store) -> None:
    uri = f"sqlite:///{store}/mlflow.db"
    assert latest_study_link(uri, "http://ui") is None  # no study yet
    tracker = Tracker(uri)
    old = tracker.ensure_experiment("old")
    tracker.client.set_experiment_tag(old, DOSE_VIEW_TAG, "{}")  # made before the view
    assert tracker.ensure_experiment("old") == old  # refreshed when used again
    assert tracker.client.get_experiment(old).tags[DOSE_VIEW_TAG] == dose_view_state()
    newer = tracker.ensure_experiment("newer")
    for experiment in (old, newer):
        tracker.create_run(experiment, "sweep", tags={"ptycho.role": "sweep"})
    assert latest_study_link(uri, "http://ui") == dose_view_link("http://ui", newer)

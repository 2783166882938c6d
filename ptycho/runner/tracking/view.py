"""The MLflow UI's first view of a study: a link that opens the dose-response charts.

MLflow 3's UI opens an experiment in its GenAI mode (an overview of traces), whatever the
experiment's kind tag says, and its runs page shows the sweep's parent with the jobs folded
under it. Its URL can carry a *shared view* (``viewStateShareKey=<key>``: the runs page's state
stored as the experiment tag ``mlflow.sharedViewState.<key>``, which the UI's own Share writes).
Every experiment the project creates or uses carries one, :data:`DOSE_VIEW_KEY`: the children
grouped by the tag ``arm``, one line chart per dose-response metric (``vs_dose/<metric>``,
logged at step = the dose) on a logarithmic dose axis; :func:`dose_view_link` opens it in
Model training mode and the chart view, so a newcomer sees the curves with no click.

``python -m ptycho.runner.ui <tracking uri> <ui url>`` prints the link of the latest study in a
store (``make ui`` does).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

__all__ = ["DOSE_VIEW_KEY", "DOSE_VIEW_TAG", "VS_DOSE_METRICS", "dose_view_link",
           "dose_view_state", "latest_study_link"]

VS_DOSE_METRICS = ("amp_ssim", "phase_ssim", "amp_frc50_nyquist", "phase_frc50_nyquist",
                   "amp_nrmse", "phase_nrmse", "amp_mse", "phase_mse", "amp_mse_crb",
                   "phase_mse_crb", "fluence", "halfsplit_amp_frc_halfbit",
                   "halfsplit_phase_frc_halfbit", "ref_amp_ssim", "ref_phase_ssim")
"""Logged a second time as ``vs_dose/<metric>`` at step = the dose: the view's charts."""
DOSE_VIEW_KEY = "dose-response"
DOSE_VIEW_TAG = f"mlflow.sharedViewState.{DOSE_VIEW_KEY}"
_LOG_SCALE = ("amp_mse", "phase_mse", "amp_mse_crb", "phase_mse_crb", "fluence")
"""Metrics spanning decades across doses: a logarithmic value axis too."""


def dose_view_state(metrics: Sequence[str] = VS_DOSE_METRICS) -> str:
    """The runs page's state (JSON, the fields MLflow's UI shares) of the dose-response view:
    grouped by ``arm``, one line chart per ``vs_dose/<metric>`` with a log dose axis (charts
    without data hidden: a study without the bound or the truth-free scores)."""
    charts = [{
        "uuid": f"ptycho-vs-dose-{metric}", "type": "LINE", "runsCountToCompare": 100,
        "metricSectionId": "ptycho-dose-response", "deleted": False, "isGenerated": False,
        "displayName": f"{metric} against dose (photons per pattern)",
        "metricKey": f"vs_dose/{metric}", "selectedMetricKeys": [f"vs_dose/{metric}"],
        "lineSmoothness": 0, "xAxisScaleType": "log",
        "scaleType": "log" if metric in _LOG_SCALE else "linear", "range": {},
        "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric",
        "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": False,
        "useGlobalLineSmoothing": True} for metric in metrics]
    section = {"uuid": "ptycho-dose-response", "name": "Dose response (median over replicates "
               "per arm; band: min to max)", "display": True, "isReordered": False,
               "deleted": False, "isGenerated": False}
    return json.dumps({
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "tag", "groupByData": "arm"}]},
        "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "compareRunCharts": charts, "compareRunSections": [section], "isDirty": True,
        "isAccordionReordered": False}, sort_keys=True)


def dose_view_link(ui_url: str, experiment_id: str) -> str:
    """The UI's address of an experiment's dose-response view: Model training mode, the chart
    view, the shared view :data:`DOSE_VIEW_KEY`."""
    return (f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType="
            f"machine_learning&compareRunsMode=CHART&viewStateShareKey={DOSE_VIEW_KEY}")


def latest_study_link(uri: str, ui_url: str) -> str | None:
    """The dose-response view of the experiment of the store's latest sweep (its view tag set
    where an older experiment lacks it), or ``None`` for a store without a sweep."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    if not experiments:
        return None
    latest = client.search_runs([e.experiment_id for e in experiments],
                                "tags.`ptycho.role` = 'sweep'", max_results=1,
                                order_by=["attributes.start_time DESC"])
    if not latest:
        return None
    experiment_id, state = latest[0].info.experiment_id, dose_view_state()
    if client.get_experiment(experiment_id).tags.get(DOSE_VIEW_TAG) != state:
        client.set_experiment_tag(experiment_id, DOSE_VIEW_TAG, state)
    return dose_view_link(ui_url, experiment_id)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the latest study's dose-response link (``make ui``)."""
    uri, ui_url = (argv if argv is not None else sys.argv[1:])[:2]
    try:
        link = latest_study_link(uri, ui_url)
    except Exception as error:  # the UI starts anyway: the link is a convenience
        print(f"(no link to the latest study: {type(error).__name__}: {error})")
        return 0
    if link is None:
        print(f"No study in {uri} yet: run one (make study), then reload.")
    else:
        print(f"The latest study's dose-response curves (grouped by arm, log dose axis):\n  {link}")
    return 0


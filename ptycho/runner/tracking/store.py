"""The MLflow store: experiments, parent and child runs, params, metrics, artifacts.

Default store (ours): the embedded SQLite file ``<project>/outputs/mlflow.db`` with artifacts under
``<project>/outputs/mlartifacts``, both absolute, never MLflow's working-directory default.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    RunStatus,
    RunTag,
    ViewType,
)
from mlflow.exceptions import MlflowException

from ptycho.runner.signals import uninterrupted
from ptycho.runner.tracking.view import DOSE_VIEW_TAG, dose_view_state

__all__ = ["EXPERIMENT_KIND_TAG", "ROLE_TAG", "DatasetRecord", "RunRecord", "Tracker",
           "default_store", "flatten", "resolve_store"]

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "ptycho.role"  # "sweep" on a sweep's parent run
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_LENGTH = 6000


def default_store(project_root: str | Path) -> tuple[str, str]:
    """``(tracking_uri, artifact_location)`` of the default SQLite store under ``outputs/``."""
    outputs = Path(project_root).resolve() / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{outputs / 'mlflow.db'}", (outputs / "mlartifacts").as_uri()


def resolve_store(uri: str | None, artifact_location: str | None,
                  project_root: str | Path) -> tuple[str, str | None, str]:
    """Which store a job or a report uses: ``(tracking_uri, artifact_location, source)``.

    The configured ``uri`` first, then ``MLFLOW_TRACKING_URI`` (the variable every MLflow tool
    honours, read here because this package is the one that talks to MLflow), then the project's
    SQLite store. ``source`` says which (``config``, ``MLFLOW_TRACKING_URI``, ``project``). A
    SQLite store without an ``artifact_location`` keeps its artifacts beside the database file.
    """
    chosen, source = uri, "config"
    if not chosen:
        chosen, source = os.environ.get("MLFLOW_TRACKING_URI") or None, "MLFLOW_TRACKING_URI"
    if not chosen:
        default_uri, default_artifacts = default_store(project_root)
        return default_uri, artifact_location or default_artifacts, "project"
    if artifact_location is None and chosen.startswith("sqlite:///"):
        database = Path(chosen.removeprefix("sqlite:///").split("?")[0])
        artifact_location = (database.parent / "mlartifacts").as_uri()
    return chosen, artifact_location, source


class _UninterruptedClient:
    """An ``MlflowClient`` each of whose calls runs inside
    :func:`ptycho.runner.signals.uninterrupted`:
    a termination signal never cuts a store transaction in half (it takes effect when the call
    returns), so the job can still close its run as KILLED."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            with uninterrupted():
                return attribute(*args, **kwargs)

        return call


def _open_sqlite(uri: str) -> _UninterruptedClient:
    """A client of a SQLite store whose schema exists, created under an exclusive file lock.

    Processes that open a fresh store at once otherwise race to create and migrate its tables
    ("table metrics already exists", alembic "expected to match one row"). Afterwards MLflow's own
    20 s busy timeout serialises the writers.
    """
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = _UninterruptedClient(MlflowClient(tracking_uri=uri))
            client.search_experiments(max_results=1)  # opens (creates) the schema
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → ``{"a.b.c": "value"}`` with string values (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


@dataclass(frozen=True)
class RunRecord:
    """What a sweep summary needs of a run."""

    run_id: str
    name: str
    status: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    start_time: float = 0.0  # unix seconds
    experiment_id: str = ""


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset a run used: ``name``, ``digest`` (e.g. the cache key), ``source`` (where it
    lives), ``source_type`` (``local`` for a file path), ``context`` (``training`` or
    ``evaluation``) and ``profile`` (a short JSON summary: patterns, N, dose)."""

    name: str
    digest: str
    source: str
    context: str
    source_type: str = "local"
    profile: str | None = None


class Tracker:
    """Thin wrapper over ``MlflowClient`` with explicit run ids.

    Args:
        uri: tracking URI (``sqlite:///abs/path.db``, ``http://host:port``, ...).
        artifact_location: artifact root for experiments this tracker creates (``None``: the
            server's or MLflow's default).
    """

    def __init__(self, uri: str, artifact_location: str | None = None) -> None:
        self.uri = uri
        self.artifact_location = artifact_location
        self.client = (_open_sqlite(uri) if uri.startswith("sqlite:///")
                       else _UninterruptedClient(MlflowClient(tracking_uri=uri)))

    # experiments -------------------------------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        """Id of experiment ``name``, created when missing; tagged for the training-runs UI and
        with the dose-response view (:mod:`.view`)."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                location = None
                if self.artifact_location:
                    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"
                    location = f"{self.artifact_location.rstrip('/')}/{slug}"
                return self.client.create_experiment(
                    name, artifact_location=location,
                    tags={EXPERIMENT_KIND_TAG[0]: EXPERIMENT_KIND_TAG[1],
                          DOSE_VIEW_TAG: dose_view_state()})
            except MlflowException as error:  # created meanwhile by another process
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise error from None
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        if experiment.tags.get(EXPERIMENT_KIND_TAG[0]) != EXPERIMENT_KIND_TAG[1]:
            self.client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND_TAG)
        if experiment.tags.get(DOSE_VIEW_TAG) != dose_view_state():  # the UI's first view
            self.client.set_experiment_tag(experiment.experiment_id, DOSE_VIEW_TAG,
                                           dose_view_state())
        return experiment.experiment_id

    # runs --------------------------------------------------------------------------------------

    def create_run(self, experiment_id: str, name: str, *, parent_run_id: str | None = None,
                   tags: Mapping[str, str] | None = None) -> str:
        """A new RUNNING run; a child of ``parent_run_id`` when given. Returns its id."""
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run as FINISHED, FAILED or KILLED."""
        RunStatus.from_string(status)  # validates the name
        self.client.set_terminated(run_id, status=status)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        items = [RunTag(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in tags.items()]
        if items:
            self.client.log_batch(run_id, tags=items)

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        items = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log finite metrics; a non-finite value is refused (never written as NaN)."""
        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"metric {key!r} is not finite ({value}); refusing to log it")
            items.append(Metric(key, value, now, step))
        for start in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[start : start + _MAX_METRICS_PER_BATCH])

    def log_datasets(self, run_id: str, datasets: list[DatasetRecord]) -> None:
        """Record what a run saw as MLflow dataset inputs (the UI's Dataset column), each with
        its ``mlflow.data.context`` (``training``, ``evaluation``)."""
        inputs = [DatasetInput(Dataset(name=d.name, digest=d.digest, source_type=d.source_type,
                                       source=d.source, profile=d.profile),
                               tags=[InputTag("mlflow.data.context", d.context)])
                  for d in datasets]
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def log_artifacts(self, run_id: str, folder: str | Path, artifact_path: str | None = None):
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None):
        self.client.log_artifact(run_id, str(path), artifact_path)

    def download_artifact(self, run_id: str, path: str, destination: str | Path) -> Path:
        """Copy artifact ``path`` of a run into ``destination``; returns the local path."""
        return Path(self.client.download_artifacts(run_id, path, str(destination)))

    def get_run(self, run_id: str) -> RunRecord:
        return _record(self.client.get_run(run_id))

    def experiment_name(self, experiment_id: str) -> str:
        return self.client.get_experiment(experiment_id).name

    def latest_sweep(self, experiment_name: str | None = None) -> tuple[str, str] | None:
        """``(experiment_id, parent_run_id)`` of the most recently started sweep, in one
        experiment or (``None``) in any."""
        if experiment_name is None:
            ids = [e.experiment_id
                   for e in self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        else:
            experiment = self.client.get_experiment_by_name(experiment_name)
            ids = [] if experiment is None else [experiment.experiment_id]
        if not ids:
            return None
        runs = self.client.search_runs(ids, filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                       run_view_type=ViewType.ACTIVE_ONLY,
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return (runs[0].info.experiment_id, runs[0].info.run_id) if runs else None

    # queries -----------------------------------------------------------------------------------

    def find_finished(self, experiment_id: str, config_hash: str,
                      parent_run_id: str | None = None) -> RunRecord | None:
        """A FINISHED, not deleted run with this ``config_hash`` tag (and this parent run, when
        given), if any."""
        where = f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'"
        if parent_run_id is not None:
            where += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
        runs = self.client.search_runs([experiment_id], filter_string=where,
                                       run_view_type=ViewType.ACTIVE_ONLY, max_results=1)
        return _record(runs[0]) if runs else None

    def find_runs(self, experiment_id: str, filter_string: str) -> list[RunRecord]:
        """Active runs of an experiment matching an MLflow filter, oldest first."""
        records: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000, order_by=["attributes.start_time ASC"], page_token=token,
            )
            records.extend(_record(run) for run in page)
            token = page.token
            if not token:
                return records

    def find_running(self, experiment_id: str, filter_string: str) -> list[RunRecord]:
        """RUNNING runs of an experiment matching an MLflow filter (live or stale alike)."""
        return self.find_runs(experiment_id,
                              f"{filter_string} and attributes.status = 'RUNNING'")

    def close_run(self, run_id: str, status: str, reason: str, message: str) -> None:
        """Close a run that did not finish as ``status`` (FAILED, KILLED), saying why: tags
        ``status_reason`` (a word: failed, killed, stale, died) and ``error`` (the message)."""
        self.set_tags(run_id, {"error": message[:5000], "status_reason": reason})
        self.end_run(run_id, status)

    def children(self, experiment_id: str, parent_run_id: str) -> list[RunRecord]:
        return self.find_runs(experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}'")


def _record(run: Any) -> RunRecord:
    return RunRecord(run_id=run.info.run_id, name=run.info.run_name, status=run.info.status,
                     metrics=dict(run.data.metrics), params=dict(run.data.params),
                     tags=dict(run.data.tags), start_time=(run.info.start_time or 0) / 1000.0,
                     experiment_id=run.info.experiment_id)

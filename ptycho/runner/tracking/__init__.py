"""Experiment tracking in MLflow. The only package that imports mlflow.

Explicit run ids through ``MlflowClient`` everywhere: no fluent active-run stack, so parents and
children can be created in any process and order.
"""

from ptycho.runner.tracking.lifecycle import PriorRun, TrackedRun, prior_run, record_failure
from ptycho.runner.tracking.liveness import HEARTBEAT_TAG, Heartbeat, close_stale_runs, stale_reason
from ptycho.runner.tracking.provenance import git_state, host_tags, package_versions
from ptycho.runner.tracking.store import (
    EXPERIMENT_KIND_TAG,
    ROLE_TAG,
    DatasetRecord,
    RunRecord,
    Tracker,
    default_store,
    flatten,
    resolve_store,
)

__all__ = [
    "EXPERIMENT_KIND_TAG", "HEARTBEAT_TAG", "ROLE_TAG", "DatasetRecord", "Heartbeat", "PriorRun",
    "RunRecord", "TrackedRun", "Tracker", "close_stale_runs", "default_store", "flatten",
    "git_state", "host_tags", "package_versions", "prior_run", "record_failure", "resolve_store",
    "stale_reason"
]

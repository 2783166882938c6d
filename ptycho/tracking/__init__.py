"""Experiment tracking in MLflow. The only package that imports mlflow.

Explicit run ids through ``MlflowClient`` everywhere: no fluent active-run stack, so parents and
children can be created in any process and order.
"""

from ptycho.tracking.provenance import git_state, package_versions
from ptycho.tracking.store import (
    EXPERIMENT_KIND_TAG,
    RunRecord,
    Tracker,
    default_store,
    flatten,
)

__all__ = [
    "EXPERIMENT_KIND_TAG",
    "RunRecord",
    "Tracker",
    "default_store",
    "flatten",
    "git_state",
    "package_versions",
]

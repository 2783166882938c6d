"""Fetch: a sweep's runs from the MLflow store, as one table, and the images the report shows.

Arms come from each run's ``arm`` tag (what ``ptycho.config`` derived from the arm's
declaration); the axes an arm does not use (its ``unused`` tag) are left blank, so runs of one
arm that differ only there are replicates of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ptycho.config import arm_label
from ptycho.config.naming import measured_name
from ptycho.config.protocol import tuning_status
from ptycho.evaluation import METRIC_KEYS, degenerate_reason
from ptycho.runner.tracking import RunRecord, Tracker

__all__ = [
    "ARM",
    "AXES",
    "CONDITION_METRICS",
    "EXTRA_METRICS",
    "TRUTH",
    "TRUTH_FREE_METRICS",
    "Sweep",
    "collect",
    "fetch_sweep",
    "noise_replicates",
    "reconstructions",
    "truth_label",
    "truth_labels",
]

log = logging.getLogger(__name__)

AXES = ("N", "gridsize", "dose", "loss", "model", "data", "object", "simulator", "tuning",
        "condition", "refinement", "seed", "noise_seed")
REPLICATES = ("seed", "noise_seed")
"""The replicate axes: an arm's runs at one dose that differ only in these are its replicates."""
ARM = ("N", "gridsize", "loss", "model", "data", "object", "simulator", "tuning", "condition",
       "refinement")
RESOLUTION_METRICS = tuple(f"{part}_{name}" for part in ("amp", "phase") for name in (
    "frc50_nyquist", "frc17_nyquist", "frc_halfbit_nyquist", "frc_onebit_nyquist",
    "resolution_px"))
"""FRC crossings as fractions of Nyquist and the half-period resolution in object pixels: the
units that compare across N and region sizes (ring indices do not)."""
LIMIT_METRICS = ("amp_mse_crb", "phase_mse_crb", "amp_crb_efficiency", "phase_crb_efficiency",
                 "amp_mse_constant", "phase_mse_constant")
"""The Cramér–Rao bound of each run's scored scan, the efficiencies bound / MSE (eval.crb), and
the MSE of the best constant image (above it the bound says nothing)."""
COLLAPSE_METRICS = ("amp_contrast", "amp_correlation", "phase_correlation")
"""What a degenerate (collapsed) reconstruction is decided from (ptycho.evaluation)."""
FIT_METRICS = ("object_nll_excess_per_photon", "wilks_nll_excess_per_photon",
               "predicted_nll_excess_per_photon")
"""Poisson NLL per photon of the scored object's counts less the true object's (every arm
alike), where a converged fit sits (Wilks), and the same for the arm's own predicted counts
(ptycho.pipeline.object_fit, nll_excess)."""
LEGACY_METRICS = {"predicted_nll_excess_per_photon": "nll_excess_per_photon",
                  "predicted_nll_per_photon": "test_nll_per_photon"}
"""Metrics logged under another name before wave 3 (the per-group NLL was named as if it were
the object's)."""
FLUENCE_METRICS = ("fluence", "fluence_p5")
"""Photons per object pixel² on the scored region (mean, 5th percentile): the sample's dose."""
CONDITION_METRICS = ("probe_error_given", "probe_error", "position_error_given_rms",
                     "position_error_rms")
"""A non-ideal experiment's: the probe's and the positions' errors as given and as refined, after
their gauges (docs/physics.md §12.4)."""
TRUTH_FREE_METRICS = (
    *(f"{prefix}_{part}_{name}" for prefix in ("halfsplit", "ref") for part in ("amp", "phase")
      for name in ("frc_halfbit", "frc50", "ssim")),
    "ref_amp_nrmse", "ref_phase_nrmse", "full_dose", "thinning_fraction")
"""Scores that need no ground truth (eval.truth_free; docs/physics.md §13.3): the half-split
FRC of two half-scan reconstructions and the agreement with a full-dose reference; and a
measured scan's full dose and the share of its photons a job kept. Every other quality metric
needs the truth and is absent (not zero) for a measured scan."""
EXTRA_METRICS = ("measured_dose", "time_train_s", "time_eval_s", "time_compile_s",
                 "time_reconstruct_s", "train_patterns_per_s", *RESOLUTION_METRICS,
                 *FLUENCE_METRICS, *LIMIT_METRICS, *COLLAPSE_METRICS, *FIT_METRICS,
                 *CONDITION_METRICS, *TRUTH_FREE_METRICS)
TRUTH = "ground truth"


@dataclass(frozen=True)
class Sweep:
    """A sweep as the store holds it: its parent run, its experiment's name, one row per run
    (:func:`collect`) and how many of them an earlier sweep ran (``resume``)."""

    parent: RunRecord
    experiment: str
    runs: pd.DataFrame
    reused: int


def fetch_sweep(tracker: Tracker, parent_run_id: str,
                reused_run_ids: Sequence[str] = ()) -> Sweep:
    """The sweep ``parent_run_id`` with its children and the earlier runs it reused."""
    parent = tracker.get_run(parent_run_id)
    own = tracker.children(parent.experiment_id, parent_run_id)
    seen = {record.run_id for record in own}
    reused = [tracker.get_run(run_id) for run_id in dict.fromkeys(reused_run_ids)
              if run_id not in seen]
    return Sweep(parent, tracker.experiment_name(parent.experiment_id),
                 collect([*own, *reused]), len(reused))


def _axis_values(record: RunRecord, unused: set[str]) -> dict[str, object]:
    params = record.params

    def number(key: str, kind: type) -> object:
        try:
            return kind(float(params[key])) if kind is int else kind(params[key])
        except (KeyError, ValueError):
            return np.nan

    design = params.get("data.design", "reconstruct")
    if "data.design" not in params and params.get("model.data", "test") != "test":
        design = params["model.data"]  # a wave-1 iterative arm that used more patterns
    if params.get("data.source", "simulate") == "file":  # a measured scan: its file
        design = "measured " + measured_name({"path": params.get("data.path", ""),
                                              "digest": params.get("data.digest", "")})
    return {
        "N": number("N", int),
        "gridsize": np.nan if "gridsize" in unused else number("gridsize", int),
        "dose": number("dose", float),
        "loss": "" if "loss" in unused else params.get("loss", ""),
        "model": params.get("model.kind", record.tags.get("model", "")),
        "data": "" if design == "reconstruct" else design,  # "generalize": a second object
        "object": params.get("data.object.kind", "lines"),
        "simulator": params.get("data.simulator", "bilinear"),
        # whether the settings were chosen on this run's data (older runs: from their params)
        "tuning": record.tags.get("tuning") or tuning_status(
            params.get("data.object.kind", "lines"), int(float(params.get("seed", 0)))),
        # the experiment's conditions and what the arm refined (runs before them: ideal, none)
        "condition": record.tags.get("condition", "ideal"),
        "refinement": "" if record.tags.get("refinement", "none") == "none"
        else record.tags["refinement"],
        "seed": number("seed", int),
        # the Poisson draw's own seed; "data.noise_seed" None (the default) means the job's seed
        "noise_seed": (number("seed", int) if params.get("data.noise_seed", "None") == "None"
                       else number("data.noise_seed", int)),
    }


def _arm(record: RunRecord, axes: dict[str, object], unused: set[str]) -> str:
    """The run's ``arm`` tag; for a run logged without one, the same label from its params."""
    if "arm" in record.tags:
        return record.tags["arm"]
    if not math.isfinite(float(axes["N"])):  # type: ignore[arg-type]
        return "(unknown: no params)"
    resolved = {**axes, "model": {"kind": axes["model"]},
                "data": {"design": axes["data"] or "reconstruct",
                         "object": {"kind": axes["object"]}, "simulator": axes["simulator"]}}
    return arm_label(resolved, unused)


def _degenerate(record: RunRecord) -> tuple[bool, str]:
    """Whether a run's reconstruction collapsed, and why: its ``degenerate`` tag, else decided
    again from its metrics (runs logged before the tag existed)."""
    if record.status != "FINISHED":
        return False, ""
    tag = record.tags.get("degenerate")
    if tag is not None:
        return tag == "true", record.tags.get("degenerate_reason", "")
    reason = degenerate_reason(record.metrics)
    return reason is not None, reason or ""


def collect(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: run id, name, status, its arm, the axes (from params), whether it is
    ``degenerate`` (and why) and every metric. A run whose params were never logged (it died
    before) cannot be placed on an axis: it counts as FAILED, with that as its error."""
    rows = []
    for record in records:
        status, error = record.status, record.tags.get("error", "")
        if not record.params or "N" not in record.params or "dose" not in record.params:
            status = "FAILED" if status == "FINISHED" else status
            error = error or "no parameters logged (the job ended before logging them)"
        degenerate, reason = _degenerate(record)
        unused = set(record.tags.get("unused", "").split(", "))  # recorded, not used by it
        axes = _axis_values(record, unused)
        row = {"run_id": record.run_id, "name": record.name, "status": status,
               "arm": _arm(record, axes, unused), **axes, "error": error, "degenerate": degenerate,
               "degenerate_reason": reason}
        for key in (*METRIC_KEYS, *EXTRA_METRICS):
            row[key] = record.metrics.get(key, record.metrics.get(LEGACY_METRICS.get(key, ""),
                                                                  np.nan))
        rows.append(row)
    columns = ["run_id", "name", "status", "arm", *AXES, "error", "degenerate",
               "degenerate_reason", *METRIC_KEYS, *EXTRA_METRICS]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["arm", "dose", "seed"], kind="stable").reset_index(drop=True)


def reconstructions(tracker: Tracker, runs: pd.DataFrame,
                    scratch: Path) -> dict[tuple[float, str], np.ndarray]:
    """Amplitude images of the lowest-seed FINISHED run of each (dose, arm), and the ground truth
    of each dose's first such run of each object class under the name :func:`truth_label` gives
    it (one truth column per object class the sweep reconstructs)."""
    images: dict[tuple[float, str], np.ndarray] = {}
    finished = runs[runs["status"] == "FINISHED"].sort_values("seed")
    for (dose, arm), part in finished.groupby(["dose", "arm"]):
        run_id = part.iloc[0]["run_id"]
        truth = truth_label(runs, part.iloc[0].get("object", "lines"))
        try:
            path = tracker.download_artifact(run_id, "reconstruction.npz", scratch / run_id)
            with np.load(path, allow_pickle=False) as npz:
                images[(float(dose), str(arm))] = npz["amplitude"]
                images.setdefault((float(dose), truth), npz["amplitude_truth"])
        except Exception as error:  # a missing artifact leaves an empty cell, said in the log
            log.warning("no reconstruction for run %s (%s)", run_id, error)
    return images


def truth_label(runs: pd.DataFrame, object_kind: str) -> str:
    """The name of an object class's ground-truth column: :data:`TRUTH` alone where the sweep
    reconstructs one object class, ``"ground truth: <class>"`` where it reconstructs several."""
    kinds = runs["object"].dropna().unique() if "object" in runs else []
    return TRUTH if len(kinds) <= 1 else f"{TRUTH}: {object_kind}"


def truth_labels(runs: pd.DataFrame) -> list[str]:
    """Every ground-truth column of the sweep's reconstruction grid, sorted (see
    :func:`truth_label`)."""
    kinds = sorted(runs["object"].dropna().unique()) if "object" in runs else []
    return sorted({truth_label(runs, kind) for kind in kinds} or {TRUTH})


def noise_replicates(tracker: Tracker, runs: pd.DataFrame,
                     scratch: Path) -> dict[tuple[str, float, int], list[dict[str, np.ndarray]]]:
    """The aligned amplitude and phase (and their truth) of every scored run that shares its
    arm, dose and seed with another one of a different noise seed: the same object, scan and
    weights under independent Poisson draws (``data.noise_seed``), for the bias–variance split
    (:func:`~.analyse.bias_variance`). Keyed by ``(arm, dose, seed)``; empty without such runs."""
    scored = runs[(runs["status"] == "FINISHED") & ~runs["degenerate"].astype(bool)]
    groups: dict[tuple[str, float, int], list[dict[str, np.ndarray]]] = {}
    for (arm, dose, seed), part in scored.groupby(["arm", "dose", "seed"]):
        if part["noise_seed"].nunique() < 2:
            continue
        arrays = []
        for run_id in part.drop_duplicates("noise_seed")["run_id"]:
            try:
                path = tracker.download_artifact(run_id, "reconstruction.npz", scratch / run_id)
                with np.load(path, allow_pickle=False) as npz:
                    arrays.append({key: npz[key] for key in ("amplitude", "amplitude_truth",
                                                             "phase", "phase_truth")})
            except Exception as error:  # a missing artifact: that run is left out, said
                log.warning("no reconstruction for run %s (%s)", run_id, error)
        if len(arrays) >= 2:
            groups[(str(arm), float(dose), int(seed))] = arrays
    return groups

"""A finished job's files: config, metrics, arrays, figures and the model, in one folder.

Plain files, no tracking: ``ptycho.runner.job`` writes them to a temporary folder and logs it as the
run's artifacts; a notebook may write them anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from ptycho import viz
from ptycho.config import JobConfig
from ptycho.pipeline import PipelineResult

__all__ = ["write_artifacts"]


def write_artifacts(folder: str | Path, config: JobConfig, result: PipelineResult, *,
                    title: str, metrics: Mapping[str, float] | None = None) -> Path:
    """Write ``config.yaml``, ``metrics.json``, ``reconstruction.npz`` (with the arm's probe
    estimate as ``probe`` where it has one, the per-pixel Cramér–Rao maps as ``crb_*`` under
    ``eval.crb``), ``figures/*.png`` (reconstruction,
    training curves, FRC, diffraction, the error beside the bound: ``limit``, and where the
    experiment was not ideal the probes and positions given, refined and true: ``probe``,
    ``positions``) and, with
    ``tracking.log_model``, what the arm keeps of itself (a trained model) as ``model/``, into
    ``folder``; returns it.

    Raises:
        OSError: the folder cannot be written (full disk, no access).
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    evaluation = result.evaluation
    (root / "config.yaml").write_text(yaml.safe_dump(config.resolved(), sort_keys=False))
    shown_metrics = dict(result.metrics if metrics is None else metrics)
    (root / "metrics.json").write_text(json.dumps(shown_metrics, indent=2, sort_keys=True))
    rows, cols = evaluation.region
    probe = result.reconstruction.probe
    np.savez_compressed(
        root / "reconstruction.npz",
        stitched=evaluation.reconstruction,
        amplitude=evaluation.amplitude.astype(np.float32),
        amplitude_truth=evaluation.amplitude_truth.astype(np.float32),
        phase=evaluation.phase.astype(np.float32),
        phase_truth=evaluation.phase_truth.astype(np.float32),
        region=np.array([rows.start, rows.stop, cols.start, cols.stop]),
        **{f"crb_{name}": values for name, values in result.limit_maps.items()},
        **({} if probe is None else {"probe": np.asarray(probe, np.complex64)}),
        **{f"probe_{name}": values for name, values in result.conditions.probes.items()},
        **{f"positions_{name}": values for name, values in result.conditions.positions.items()},
    )
    figures = root / "figures"
    figures.mkdir(exist_ok=True)
    measured, expected = result.diffraction
    drawn = {
        "reconstruction": viz.reconstruction_figure(evaluation, title),
        "training_curves": viz.training_curves_figure(result.history, title),
        "frc": viz.frc_figure(evaluation.frc, title),
        "diffraction": viz.diffraction_figure(measured, expected, len(measured), title,
                                              mask=result.mask),
    }
    conditions = result.conditions
    if conditions.probes:  # the probe the arm was given and its refinement, beside the truth
        drawn["probe"] = viz.probe_figure(conditions.probes, title)
    if conditions.positions:
        drawn["positions"] = viz.positions_figure(conditions.positions, title)
    if result.limit_maps:
        drawn["limit"] = viz.limit_figure(evaluation, result.limit_maps, title)
    for name, figure in drawn.items():
        figure.savefig(figures / f"{name}.png", dpi=90)
    if config.tracking.log_model and result.reconstruction.save is not None:
        result.reconstruction.save(root / "model")
    return root

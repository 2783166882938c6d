"""Save and load trained models: weights, the input normalisation statistic and the spec.

A saved model is a folder::

    model.json          {"spec": ModelSpec fields, "input_scale": float, "format": 1}
    model.weights.h5    Keras weights of the training model (the probe and scale included)

Loading rebuilds fresh models from the spec and loads the weights, so predictions are identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ptycho.models.factories import Models, ModelSpec, build_models

__all__ = ["TrainedModel", "load_model", "save_model"]

_FORMAT = 1


@dataclass(eq=False)
class TrainedModel:
    models: Models
    input_scale: float
    """Multiplier of √counts at the network input, fixed on the training split."""


def save_model(folder: str | Path, models: Models, input_scale: float) -> Path:
    """Write ``models`` and ``input_scale`` to ``folder`` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models.train.save_weights(folder / "model.weights.h5")
    manifest = {"format": _FORMAT, "spec": models.spec.to_dict(), "input_scale": input_scale}
    (folder / "model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return folder


def load_model(folder: str | Path) -> TrainedModel:
    """Rebuild and load a model saved by :func:`save_model`."""
    folder = Path(folder)
    manifest_path = folder / "model.json"
    if not manifest_path.is_file():
        raise ValueError(f"no saved model in {str(folder)!r}: model.json is missing")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != _FORMAT:
        raise ValueError(
            f"saved model {str(folder)!r} has format {manifest.get('format')!r}, expected {_FORMAT}"
        )
    models = build_models(ModelSpec(**manifest["spec"]))
    models.train.load_weights(folder / "model.weights.h5")
    return TrainedModel(models=models, input_scale=float(manifest["input_scale"]))

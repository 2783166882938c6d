"""``config_hash``: two jobs with equal hashes compute the same numbers (the resume key)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any

from ptycho.config.sections import (
    CONDITION_SECTIONS,
    FOCUSED_PROBE_SETTINGS,
    SIMULATION_SETTINGS,
    DataConfig,
)

__all__ = ["ADDED_SETTINGS", "CONDITIONAL_SETTINGS", "NOT_HASHED", "config_hash"]

NOT_HASHED = ("tracking", "resume", "dry_run", "isolate", "hydra", "data.cache", "data.cache_dir",
              "eval.n_diffraction", "eval.crb", "eval.crb_samples",
              "eval.truth_free", "eval.reference", "eval.reference_dose")
"""Keys that do not change a job's numbers: where results go, how the job is run, the caching
of its inputs, how many patterns one figure shows, and whether the physical limit is computed
beside the reconstruction's metrics."""
ADDED_SETTINGS = (
    ("data.simulator", "bilinear", ("data.oversampling", "data.pixel_subsamples")),
    ("model.stopping", "fixed", ("model.heldout_fraction", "model.patience")),
    ("train.schedule", "plateau", ("train.warmup_fraction",)),
    ("data.source", "simulate", ("data.path", "data.digest", "data.measured")),
)
"""Settings added after jobs were logged (wave 3), with the value that computes what those jobs
computed and the settings that only matter otherwise: at that value all of them are left out
of the hash, so the earlier jobs' hashes (and resume) hold. A measured scan's file is named by
its ``digest`` (the same path with other contents is another job)."""


CONDITIONAL_SETTINGS = (
    ("data.probe", "kind", "focused", FOCUSED_PROBE_SETTINGS),
    ("model", "trainable_probe", True, ("probe_learning_rate_scale",)),
    ("model", "position_correction", True, ("position_step_size", "position_update_limit")),
    ("data", "source", "simulate", SIMULATION_SETTINGS),
)
"""Settings a section reads only when one of its keys has one value (``path``, ``key``,
``value``, the settings): left out of the hash otherwise, so adding them (wave 3's focused
probe, the probe's learning rate) changed no earlier job's hash, and a sweep over them without
the key's value runs one job."""


def _ideal(name: str) -> dict[str, Any]:
    """The condition section ``name`` at its defaults (an ideal experiment), as a resolved
    config holds it: left out of the hash (:data:`ptycho.config.CONDITION_SECTIONS`)."""
    return json.loads(json.dumps(dataclasses.asdict(getattr(DataConfig(), name)), default=str))


def config_hash(resolved: typing.Mapping[str, Any], unused: typing.Iterable[str] = ()) -> str:
    """sha256 (16 hex) of the resolved config without the dotted keys of :data:`NOT_HASHED`
    and ``unused`` (the settings its arm does not read,
    :meth:`ptycho.config.ArmSettings.unused`)."""
    relevant = json.loads(json.dumps(dict(resolved), default=str))
    for key in (*NOT_HASHED, *unused):
        *parents, leaf = key.split(".")
        node = relevant
        for parent in parents:
            node = node.get(parent, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    # conditional first: they read keys (data.source) that the added settings drop
    for path, key, value, names in CONDITIONAL_SETTINGS:
        node = relevant
        for part in path.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(key) != value:
            for name in names:
                node.pop(name, None)
    for key, neutral, dependent in ADDED_SETTINGS:
        section, leaf = key.split(".")
        node = relevant.get(section)
        if isinstance(node, dict) and node.get(leaf, neutral) == neutral:
            for name in (key, *dependent):
                node.pop(name.split(".")[1], None)
    data = relevant.get("data")
    if isinstance(data, dict):
        for name in CONDITION_SECTIONS:
            ideal = _ideal(name)
            if data.get(name, ideal) == ideal:
                data.pop(name, None)
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

"""``config_hash``: two jobs with equal hashes compute the same numbers (the resume key)."""

from __future__ import annotations

import hashlib
import json
import typing
from typing import Any

__all__ = ["NOT_HASHED", "SIMULATOR_SETTINGS", "config_hash"]

NOT_HASHED = ("tracking", "resume", "dry_run", "isolate", "hydra", "data.cache", "data.cache_dir",
              "eval.n_diffraction", "eval.crb", "eval.crb_samples")
"""Keys that do not change a job's numbers: where results go, how the job is run, the caching
of its inputs, how many patterns one figure shows, and whether the physical limit is computed
beside the reconstruction's metrics."""
SIMULATOR_SETTINGS = ("simulator", "oversampling", "pixel_subsamples")
"""The ``data`` settings of the exact simulator: with ``data.simulator=bilinear`` (what every
job computed before they existed) they are left out, so those jobs' hashes hold."""


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
    data = relevant.get("data")
    if isinstance(data, dict) and data.get("simulator", "bilinear") == "bilinear":
        for key in SIMULATOR_SETTINGS:
            data.pop(key, None)
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

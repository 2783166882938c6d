"""Run names and arm labels, from the axes each arm uses (its declaration)."""

from __future__ import annotations

import typing
from typing import Any

from ptycho.config.protocol import tuning_status

__all__ = ["NAMING_AXES", "arm_label", "condition_label", "format_dose", "measured_name",
           "refinement_label", "run_name"]

NAMING_AXES = ("N", "gridsize", "dose", "loss", "model", "model.kind", "seed")
"""Override keys the run name already shows."""


def format_dose(dose: float) -> str:
    """``1e4`` for 10000.0, ``2.5e3`` for 2500.0: compact and sortable by eye."""
    mantissa, exponent = f"{dose:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _used(resolved: typing.Mapping[str, Any], unused: typing.Container[str]) -> dict[str, str]:
    """The optional axes an arm uses, as they appear in names: gridsize and loss."""
    used = {}
    if "gridsize" not in unused:
        used["gridsize"] = f"g{resolved['gridsize']}"
    if "loss" not in unused:
        used["loss"] = str(resolved["loss"])
    return used


def run_name(resolved: typing.Mapping[str, Any], unused: typing.Container[str] = (),
             extra: typing.Mapping[str, str] | None = None) -> str:
    """Child-run name from the axes its arm uses, e.g. ``N64_g2_dose1e4_poisson_nll_pinn_s0``
    or ``N64_dose1e4_lsqml_s0``; ``extra`` (swept settings that are not axes) is appended,
    e.g. ``…_s0_train.epochs=40``."""
    used = _used(resolved, unused)
    parts = [f"N{resolved['N']}", used.get("gridsize"), f"dose{format_dose(resolved['dose'])}",
             used.get("loss"), str(resolved["model"]["kind"]), f"s{resolved['seed']}"]
    name = "_".join(part for part in parts if part)
    for key, value in (extra or {}).items():
        name += f"_{key}={value}"
    return name


def arm_label(resolved: typing.Mapping[str, Any], unused: typing.Container[str] = ()) -> str:
    """What a dose-response curve is drawn for: ``N64 g2 poisson_nll pinn``, ``N64 lsqml``,
    ``… generalize`` when scored on a second object, ``… grf`` on another object class than
    the lines, ``… focused probe`` (or ``npz probe``) under another probe than the disc,
    ``… exact`` on data of the exact simulator, ``… [held-out]`` (or ``[held-out seed]``,
    ``[held-out object]``) on data the settings were not chosen on
    (:mod:`ptycho.config.protocol`), then the experiment's conditions and the arm's refinement
    where there are any (``· probe perturbed + detector · refined``): tag ``arm``, by which
    the report and the MLflow UI's charts group, so runs of other data or another protocol are
    never pooled."""
    used = _used(resolved, unused)
    data = resolved.get("data", {})
    design = data.get("design", "reconstruct")
    kind = str(data.get("object", {}).get("kind", "lines"))
    status = tuning_status(kind, int(resolved.get("seed", 0)))
    simulator = str(data.get("simulator", "bilinear"))
    probe = str(data.get("probe", {}).get("kind", "disc"))
    if str(data.get("source", "simulate")) == "file":  # a measured scan: its file says it all
        return " ".join(part for part in (
            f"N{resolved['N']}", used.get("gridsize"), used.get("loss"),
            str(resolved["model"]["kind"]), f"measured {measured_name(data)}",
            refinement_label(resolved) or None) if part)
    parts = [f"N{resolved['N']}", used.get("gridsize"), used.get("loss"),
             str(resolved["model"]["kind"]), None if design == "reconstruct" else design,
             None if kind == "lines" else kind,
             None if probe == "disc" else f"{probe} probe",
             None if simulator == "bilinear" else simulator,
             None if status == "tuned" else f"[{status}]"]
    condition, refinement = condition_label(resolved), refinement_label(resolved)
    label = " ".join(part for part in parts if part)
    if condition != "ideal" or refinement:
        label += f" · {condition}" + (f" · {refinement}" if refinement else "")
    return label


def measured_name(data: typing.Mapping[str, Any]) -> str:
    """A measured scan's label: its file's name and the start of its digest (two files of one
    name are two scans)."""
    name = str(data.get("path", "")).replace("\\", "/").rsplit("/", 1)[-1]
    digest = str(data.get("digest") or "")[:8]
    return f"{name} [{digest}]" if digest else name


CONDITION_PARTS = ("probe", "positions", "detector")
"""The order of a condition label's parts."""


def condition_label(resolved: typing.Mapping[str, Any]) -> str:
    """What in the experiment was not ideal (tag ``condition``): ``ideal``, or the parts of
    ``probe perturbed`` (or ``probe estimated``: what the reconstructors were given),
    ``positions off`` and ``detector`` joined by `` + ``."""
    data = resolved.get("data", {})
    if str(data.get("source", "simulate")) == "file":
        return "measured"
    parts = []
    guess = str(data.get("probe_guess", {}).get("kind", "exact"))
    if guess != "exact":
        parts.append("probe perturbed" if guess == "perturbed" else "probe estimated")
    if any(float(value) for key, value in data.get("position_error", {}).items()):
        parts.append("positions off")
    if any(float(value) for key, value in data.get("detector", {}).items()):
        parts.append("detector")
    return " + ".join(parts) or "ideal"


def refinement_label(resolved: typing.Mapping[str, Any]) -> str:
    """What the arm refined besides the object (tag ``refinement``): ``refined probe``,
    ``refined positions``, ``refined probe + positions``, or ``""``."""
    model = resolved.get("model", {})
    probe = bool(model.get("trainable_probe") or model.get("probe_update"))
    positions = bool(model.get("position_correction"))
    refined = [name for name, on in (("probe", probe), ("positions", positions)) if on]
    return f"refined {' + '.join(refined)}" if refined else ""

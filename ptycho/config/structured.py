"""Hydra's structured config, generated from the schema (no Hydra import here: the runner
registers it).

Each section gets a mutable twin with the same fields, types and defaults (Hydra writes overrides
into it), so a typo, a wrong type or an unknown choice fails at composition. The ``model`` node
holds every arm's keys (``None``: the chosen arm's default), so a preset can set the network's
width and LSQML's iterations for a sweep over both; :func:`ptycho.config.validate` then keeps
the chosen arm's. The twins are served by this module's ``__getattr__`` under their names, so
a pickled config (joblib's workers) finds them.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import field
from typing import Any

from ptycho.config.arms import ArmSettings, settings_classes
from ptycho.config.job import JobConfig
from ptycho.config.sections import JitCompile, Section, enum_of

__all__ = ["SCHEMA_NAME", "hydra_schema"]

SCHEMA_NAME = "ptycho_schema"
_PREFIX = "Hydra"


def hydra_schema() -> type:
    """Hydra's structured config for :class:`~ptycho.config.JobConfig`."""
    return _twin(JobConfig)


@functools.cache  # a memo of a pure function: one class per name, which pickling relies on
def _twin(cls: type) -> type:
    if cls is ArmSettings:
        return _arms_twin()
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Any, Any]] = []
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if isinstance(kind, type) and issubclass(kind, Section):
            nested = _twin(kind)
            fields.append((item.name, nested, field(default_factory=nested)))
            continue
        if enum_of(kind) is JitCompile:  # YAML's true/false are booleans: the section turns
            kind = str                   # strings into choices
        missing = item.default is dataclasses.MISSING
        default = item.default_factory() if missing else item.default  # type: ignore[misc]
        fields.append((item.name, kind, field(default=default)))
    return _make(_PREFIX + cls.__name__, fields, cls.__name__)


def _arms_twin() -> type:
    """The ``model`` node: ``kind`` and every arm's settings, each ``None`` unless set."""
    kinds: dict[str, Any] = {}
    for cls in settings_classes().values():
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if item.name != "kind" and kinds.setdefault(item.name, hints[item.name]) != hints[
                    item.name]:
                raise TypeError(f"model.{item.name} has two types: {kinds[item.name]} and "
                                f"{hints[item.name]} ({cls.__name__})")
    fields = [("kind", str, field(default="pinn"))]
    fields += [(name, kind | None, field(default=None)) for name, kind in kinds.items()]
    return _make(_PREFIX + ArmSettings.__name__, fields, "every arm's settings")


def _make(name: str, fields: list[tuple[str, Any, Any]], what: str) -> type:
    generated = dataclasses.make_dataclass(name, fields)
    generated.__module__ = __name__
    generated.__doc__ = f"Hydra's (mutable) twin of {what}."
    return generated


def __getattr__(name: str) -> type:
    sections = [JobConfig, ArmSettings]
    while sections:
        cls = sections.pop()
        if name == _PREFIX + cls.__name__:
            return _twin(cls)
        sections += [kind for kind in typing.get_type_hints(cls).values()
                     if isinstance(kind, type) and issubclass(kind, Section)
                     and kind is not ArmSettings]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Every arm's settings class (the ``model`` section), found in this package's modules.

An arm is added by a module here (its settings class, whose ``kind`` default names it), a module
in :mod:`ptycho.arms` (its reconstructor) and ``conf/model/<kind>.yaml``; nothing else lists the
arms. What an arm reads of the job besides its settings is declared on its class
(:attr:`~.base.ArmSettings.uses`), and the run name, the ``config_hash``, the ``arm`` and
``unused`` tags, the "same job" skip and the report's labels all derive from that.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from ptycho.config.arms.base import ARM_DEPENDENT, ArmSettings

__all__ = ["ARM_DEPENDENT", "ArmSettings", "settings_class", "settings_classes"]


def settings_classes() -> dict[str, type[ArmSettings]]:
    """``kind → settings class`` of every arm, sorted by kind (read from the modules each call:
    no registry to keep in step)."""
    found: dict[str, type[ArmSettings]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, ArmSettings)
                    and value.__module__ == module.__name__ and kind_of(value)):
                found[kind_of(value)] = value
    return dict(sorted(found.items()))


def kind_of(cls: type[ArmSettings]) -> str:
    """The arm a settings class is for: its ``kind`` default (empty for a shared base)."""
    return str(cls.__dataclass_fields__["kind"].default)


def settings_class(kind: str) -> type[ArmSettings]:
    """The settings class of arm ``kind``.

    Raises:
        ValueError: no arm of that kind, naming the known ones.
    """
    classes = settings_classes()
    if kind not in classes:
        raise ValueError(f"must be one of {list(classes)}")
    return classes[kind]


def field_names(cls: type) -> set[str]:
    return {item.name for item in dataclasses.fields(cls)}

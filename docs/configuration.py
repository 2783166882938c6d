"""Writes docs/configuration.md from the schema: every key, its default, its type or choices, and
the docstring written beside it in ``ptycho/config/``.

    python docs/configuration.py          # regenerate docs/configuration.md
    python docs/configuration.py --check  # exit 1 if it is stale (tests/test_docs.py runs it)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import sys
import typing
from enum import StrEnum
from pathlib import Path

from ptycho.config import (
    ArmSettings,
    DataConfig,
    DetectorConfig,
    EvalConfig,
    JobConfig,
    ObjectConfig,
    PositionErrorConfig,
    ProbeConfig,
    ProbeGuessConfig,
    ScanConfig,
    TrackingConfig,
    TrainConfig,
    settings_classes,
)
from ptycho.config.arms.base import ARM_DEPENDENT

OUT = Path(__file__).resolve().with_name("configuration.md")
HEADER = """# Configuration keys

Generated from the schema (`ptycho/config/`) by `python docs/configuration.py`; a test fails when
this file is stale. Every key is set in `conf/` (whose YAML files repeat these defaults), on the
command line (`key=value`, `group=option`) or by a preset (`experiment=…`). Hydra checks types
and choices at composition; `ptycho.config.validate` checks every value before any work and names
the key and the value it refuses.
"""


def _docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string after its annotation), inherited ones included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("ptycho.config") or klass is object:
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body  # type: ignore[attr-defined]
        for first, second in itertools.pairwise(body):
            if (isinstance(first, ast.AnnAssign) and isinstance(second, ast.Expr)
                    and isinstance(second.value, ast.Constant)
                    and isinstance(second.value.value, str)):
                docs[first.target.id] = " ".join(  # type: ignore[union-attr]
                    inspect.cleandoc(second.value.value).split())
    return docs


def _kind(annotation: object) -> str:
    options = typing.get_args(annotation) or (annotation,)
    for option in options:
        if isinstance(option, type) and issubclass(option, StrEnum):
            return " \\| ".join(f"`{member.value}`" for member in option)
    return " \\| ".join("None" if option is type(None) else getattr(option, "__name__",
                                                                  str(option))
                        for option in options)


def _table(cls: type, prefix: str) -> list[str]:
    hints, docs = typing.get_type_hints(cls), _docs(cls)
    rows = ["| key | default | type or choices | meaning |", "|---|---|---|---|"]
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            continue
        default = item.default if item.default is not dataclasses.MISSING else ""
        shown = default.value if isinstance(default, StrEnum) else default
        meaning = docs.get(item.name, "").replace("|", "\\|")
        rows.append(f"| `{prefix}{item.name}` | `{shown!r}` | {_kind(kind)} | {meaning} |")
    return rows


def _section(title: str, cls: type, prefix: str, note: str = "") -> list[str]:
    doc = " ".join(inspect.cleandoc(cls.__doc__ or "").split())
    return [f"## {title}", "", f"{doc} {note}".strip(), "", *_table(cls, prefix), ""]


def render() -> str:
    lines = [HEADER]
    lines += _section("The job (axes and switches)", JobConfig, "")
    for title, cls, prefix in (("Data (`data.*`)", DataConfig, "data."),
                               ("The object (`data/object=…`, `data.object.*`)", ObjectConfig,
                                "data.object."),
                               ("The probe (`data.probe.*`)", ProbeConfig, "data.probe."),
                               ("The scan (`data.scan.*`)", ScanConfig, "data.scan."),
                               ("The probe the reconstructors start from (`condition=…`, "
                                "`data.probe_guess.*`)", ProbeGuessConfig, "data.probe_guess."),
                               ("Position errors (`condition=…`, `data.position_error.*`)",
                                PositionErrorConfig, "data.position_error."),
                               ("The detector (`condition=…`, `data.detector.*`)",
                                DetectorConfig, "data.detector.")):
        lines += _section(title, cls, prefix)
    lines += ["## The arm (`model=…`, `model.*`)", "",
              " ".join(inspect.cleandoc(ArmSettings.__doc__ or "").split()),
              f"Settings of the job only some arms read: {', '.join(ARM_DEPENDENT)}; each arm's "
              "row below says which it does (the others are recorded, not hashed, and left out "
              "of its run name). A preset may set another arm's keys (they are not used).", ""]
    for kind, cls in settings_classes().items():
        reads = f"Reads {', '.join(cls.uses) or 'none of them'}."
        if cls.supervised:
            reads += " Supervised: trains on the true patches of its training scan."
        lines += _section(f"`model={kind}`", cls, "model.", reads)
    for title, cls, prefix in (("Training (`train.*`)", TrainConfig, "train."),
                               ("Evaluation (`eval.*`)", EvalConfig, "eval."),
                               ("Tracking (`tracking.*`)", TrackingConfig, "tracking.")):
        lines += _section(title, cls, prefix)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python docs/configuration.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

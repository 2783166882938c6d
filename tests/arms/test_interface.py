"""Every reconstructor behind one interface: each arm has its settings class, its module and its
``conf/model/`` option; nothing in the reconstruction path can take the truth (by its types, and
by what it computes: changing the truth after simulation changes no unsupervised arm's object)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from pathlib import Path

import numpy as np
import pytest

import ptycho.arms
import ptycho.reconstruction
from ptycho.arms import Arm, ArmInput, arm, arms
from ptycho.config import SEARCH_OBJECTIVES, settings_classes, validate
from ptycho.data import DatasetPair, DiffractionData, Scan, make_datasets
from ptycho.pipeline import run_pipeline, simulation_spec

ROOT = Path(__file__).resolve().parents[2]
TRUTH_TYPES = (DiffractionData, DatasetPair)
TRUTH_NAMES = {"obj", "truth", "ground_truth", "patches_truth", "pair"}


def test_every_arm_has_its_settings_its_module_and_its_option() -> None:
    assert set(arms()) == set(settings_classes())
    assert {path.stem for path in (ROOT / "conf" / "model").glob("*.yaml")} == set(arms())
    for kind, found in arms().items():
        assert isinstance(found, Arm) and found.kind == kind
    with pytest.raises(ValueError, match=r"no arm 'unet' in ptycho.arms \(there are: \["):
        arm("unet")


def _public_functions() -> list[tuple[str, object]]:
    found = []
    for package in (ptycho.reconstruction, ptycho.arms):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, value in vars(module).items():
                if (inspect.isfunction(value) and value.__module__ == module.__name__
                        and not name.startswith("_")):
                    found.append((f"{module.__name__}.{name}", value))
    return found


def test_no_reconstruction_function_has_a_parameter_for_the_truth() -> None:
    """By type: the reconstruction path takes Scans (counts, positions, probe, grid), never a
    DiffractionData or a DatasetPair (which carry the object); by name: no ``obj`` or
    ``truth``. The one way in is ``ArmInput.supervision``, declared by the baseline."""
    functions = _public_functions()
    assert len(functions) > 10
    for name, function in functions:
        hints = typing.get_type_hints(function)
        for parameter in inspect.signature(function).parameters:
            kind = hints.get(parameter)
            assert parameter not in TRUTH_NAMES, (name, parameter)
            assert kind not in TRUTH_TYPES and not any(
                option in TRUTH_TYPES for option in typing.get_args(kind)), (name, parameter)
    fields = {item.name: item.type for item in dataclasses.fields(ArmInput)}
    assert fields == {"training": "Scan", "scored": "Scan", "supervision": "np.ndarray | None"}
    assert not {"obj", "patches"} & {item.name for item in dataclasses.fields(Scan)}
    assert [kind for kind, cls in settings_classes().items() if cls.supervised] == ["baseline"]


def test_no_arm_reads_the_data_section_of_its_job() -> None:
    """An arm gets its job for its own settings, the seed and the shared axes; the data
    section (how the truth was made) reaches it only as the Scans of its ArmInput. Read from
    the source: an attribute ``.data`` of the job, or a ``getattr`` of it, in any arm or
    reconstruction module."""
    import ast

    for package in (ptycho.arms, ptycho.reconstruction):
        for path in Path(package.__path__[0]).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "data":
                    assert not (isinstance(node.value, ast.Name)
                                and node.value.id in {"job", "config"}), (path.name, node.lineno)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr":
                    assert "data" not in ast.unparse(node), (path.name, node.lineno)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(settings_classes()))
def test_changing_the_truth_after_simulation_changes_no_reconstruction(kind: str,
                                                                        monkeypatch) -> None:
    """Every arm, the same job twice, the second with the truth it must not see replaced by
    noise after simulation (the scored scan's object and patches; for an unsupervised arm the
    training scan's too): the reconstructed object is identical (the truth cannot reach it);
    only the scores change. A supervised arm runs in design generalize (it is refused in
    reconstruct) and keeps its training scan's patches: its labels."""
    supervised = settings_classes()[kind].supervised
    config = validate({"N": 16, "dose": 1e4, "model": {"kind": kind, "iterations": 3,
                                                       "stopping": "heldout", "patience": 1},
                       "data": {"object": {"size": 40}, "n_train": 32, "cache": False,
                                "design": "generalize" if supervised else "reconstruct"},
                       "train": {"epochs": 1, "batch_size": 8}, "eval": {"crb": False}})
    pair = make_datasets(simulation_spec(config))
    rng = np.random.default_rng(0)

    def noise(array: np.ndarray) -> np.ndarray:
        return (rng.standard_normal(array.shape) * np.exp(1j * rng.random(array.shape))).astype(
            np.complex64)

    def false(scan: DiffractionData) -> DiffractionData:
        return DiffractionData(counts=scan.counts, positions=scan.positions, probe=scan.probe,
                               obj=noise(scan.obj), patches=noise(scan.patches), dose=scan.dose)

    scored = false(pair.test)
    changed_pair = (DatasetPair(pair.train, scored) if supervised
                    else DatasetPair(scored, scored) if pair.reconstructs
                    else DatasetPair(false(pair.train), scored))
    results = []
    for given in (pair, changed_pair):
        monkeypatch.setattr("ptycho.pipeline.load_or_simulate", lambda spec, cache, g=given:
                            (g, False))
        results.append(run_pipeline(config))
    true, changed = results
    np.testing.assert_array_equal(changed.reconstruction.obj, true.reconstruction.obj)
    assert changed.metrics["amp_ssim"] != true.metrics["amp_ssim"]
    # what a settings search may optimise is the data's alone: unchanged too
    objectives = [key for key in SEARCH_OBJECTIVES if key in true.metrics]
    assert objectives, kind
    assert all(changed.metrics[key] == true.metrics[key] for key in objectives)
    if supervised:  # the check can see a leak: its labels, changed, change its object
        labels = DatasetPair(false(pair.train), pair.test)
        monkeypatch.setattr("ptycho.pipeline.load_or_simulate", lambda spec, cache:
                            (labels, False))
        assert not np.array_equal(run_pipeline(config).reconstruction.obj,
                                  true.reconstruction.obj)
    # what else the arm returns: a network its patches (every scored pattern's) and its probe
    network = "train" in settings_classes()[kind].uses
    patches, probe = true.reconstruction.patches, true.reconstruction.probe
    if network:
        assert patches.patches.shape == (32, 16, 16) and patches.patches.dtype == np.complex64
        assert sorted(patches.indices) == list(range(32)) and patches.positions.shape == (32, 2)
        assert probe.shape == (16, 16) and probe.dtype == np.complex64
    else:
        assert patches is None and probe is None

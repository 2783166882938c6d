"""The one schema: composition of the real conf/, validation, defaults, names and hashes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from ptycho.config import (
    ARM_DEPENDENT,
    LIKELIHOOD_SYNC_EPOCHS,
    ConfigError,
    DataConfig,
    JitCompile,
    JobConfig,
    ObjectConfig,
    config_hash,
    format_dose,
    settings_classes,
    validate,
)
from ptycho.runner.sweep import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
GENERALIZE = {"data": {"design": "generalize"}}
BASELINE = {"model": {"kind": "baseline"}, **GENERALIZE}  # scored on another object


def composed(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_the_default_config_validates() -> None:
    config = validate(composed())
    assert (config.N, config.gridsize, config.dose, config.loss) == (64, 1, 1e6, "poisson_nll")
    assert config.model.kind == "pinn" and config.train.jit_compile == JitCompile.auto
    assert config.data.object.kind == "lines" and config.data.object.size == 128  # 2·N
    assert config.name() == "N64_g1_dose1e6_poisson_nll_pinn_s0"
    assert dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen


PRESETS = sorted(path.stem for path in (Path(__file__).parents[1] / "conf" / "experiment").glob(
    "*.yaml"))


def test_the_presets_are_the_documented_ones() -> None:
    assert PRESETS == ["dose_response", "heldout", "measured", "paper", "quickstart",
                       "realistic", "reference_small", "simulators", "smoke", "tune",
                       "tune_lsqml_tv"]


@pytest.mark.parametrize("experiment", PRESETS)
def test_every_experiment_preset_composes_and_validates(experiment: str,
                                                        tmp_path: Path) -> None:
    extra = []
    if experiment == "measured":  # the study of a user's file: it needs one
        from tests.helpers import exported_scan

        exported_scan(tmp_path / "scan.cxi", N=32, n_train=24)
        extra = [f"data.path={tmp_path / 'scan.cxi'}"]
    config = validate(composed(f"experiment={experiment}", *extra))
    assert config.tracking.experiment == experiment


def test_experiment_values_override_the_defaults() -> None:
    config = validate(composed("experiment=smoke"))
    assert config.N == 16 and config.train.epochs == 2
    assert validate(composed("experiment=smoke", "N=32")).N == 32  # the command line wins


@pytest.mark.parametrize("value", ["true", "false", "auto"])
def test_jit_compile_takes_yaml_booleans_and_auto(value: str) -> None:
    assert validate(composed(f"train.jit_compile={value}")).train.jit_compile == value


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("N=48", "N=48: N must be an integer power of two >= 16, got 48"),
        ("gridsize=0", "gridsize=0: gridsize must be an integer >= 1, got 0"),
        ("dose=-1", "dose=-1.0: dose must be a positive finite number"),
        ("dose=nan", "dose=nan"),
        ("dose=1e30", "dose=1e+30: must be <= 1e+15 photons per pattern"),
        ("train.epochs=0", "train.epochs=0: must be >= 1"),
        ("train.batch_size=1000", "train.batch_size=1000: exceeds"),
        ("data.n_train=3", "data.n_train=3"),
        ("data.object.size=16", "data.object.size=16: smaller than a patch of N=16"),
        ("data.probe.radius_fraction=0.9", "data.probe.radius_fraction=0.9: must be <= 0.5"),
        ("eval.keep_fraction=0", "eval.keep_fraction=0.0: must be > 0"),
        ("tracking.uri=ftp://nowhere/x", "tracking.uri='ftp://nowhere/x': unsupported tracking "
                                         "URI scheme 'ftp'"),
        ("tracking.stale_after_s=10", "tracking.stale_after_s=10.0: must be >= 180"),
        ("model.kind=unet", "model.kind='unet': must be one of ['baseline', 'epie', 'lsqml'"),
        ("model=baseline", "data.design='reconstruct': model=baseline trains on the true patches "
                           "of its training scan, which with design reconstruct is the scan it "
                           "is scored on"),
    ],
)
def test_bad_values_name_key_and_value(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate(composed("experiment=smoke", override))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "override",
    ["dose=abc", "loss=foo", "Nn=64", "train.epochs=ten", "data.object.kind=circles",
     "data.scan.kind=spiral", "eval.phase_alignment=tilt", "model.iterations=many", "model=unet"],
)
def test_typos_wrong_types_and_unknown_choices_fail_at_composition(override: str) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as raised:
        composed(override)
    key, value = override.split("=")
    assert key.split(".")[-1] in str(raised.value) or value in str(raised.value)


def test_plain_dicts_are_checked_like_composed_configs() -> None:
    with pytest.raises(ConfigError, match=r"data\.object\.kind='circles': must be one of "):
        validate({"data": {"object": {"kind": "circles"}}})
    with pytest.raises(ConfigError, match=r"train\.epochz: not a setting"):
        validate({"train": {"epochz": 3}})
    assert validate({"dose": 1000}).dose == 1000.0 and isinstance(validate({"dose": 1000}).dose,
                                                                   float)


@pytest.mark.parametrize("content", [b"not an npz at all\n", b""])
def test_a_missing_or_invalid_npz_is_refused_before_any_work(tmp_path: Path,
                                                              content: bytes) -> None:
    fake = tmp_path / "x.npz"
    fake.write_bytes(content)
    with pytest.raises(ConfigError, match=r"data\.object\.path='.*x\.npz': not a valid NPZ file"):
        validate(composed("experiment=smoke", "data/object=npz", f"data.object.path={fake}"))
    with pytest.raises(ConfigError, match=r"data\.probe\.path='/no/such\.npz': NPZ file not "):
        validate(composed("experiment=smoke", "data.probe.kind=npz",
                          "data.probe.path=/no/such.npz"))


def test_config_hash_covers_what_changes_results_and_nothing_else() -> None:
    base = validate(composed("experiment=smoke")).config_hash
    same = [
        "tracking.experiment=other", "resume=false", "isolate=true", "data.cache=false",
        "data.cache_dir=/somewhere/else", "eval.n_diffraction=2", "tracking.log_model=false",
    ]
    for override in same:
        assert validate(composed("experiment=smoke", override)).config_hash == base, override
    for override in ["dose=1e4", "train.epochs=3", "data.design=generalize", "eval.border=3",
                     "train.jit_compile=true", "data.noise_seed=5"]:
        assert validate(composed("experiment=smoke", override)).config_hash != base, override
    assert len(base) == 16 and config_hash({"a": 1}) == config_hash({"a": 1, "tracking": 2})
    # An integer given for a float setting is the same setting.
    assert (validate(composed("experiment=smoke", "dose=100000")).config_hash
            == validate(composed("experiment=smoke", "dose=1e5")).config_hash)


def test_run_names_are_built_from_the_axes_each_arm_uses_and_the_other_swept_settings() -> None:
    job = {"N": 64, "gridsize": 2, "dose": 1e4}
    assert validate(job).name() == "N64_g2_dose1e4_poisson_nll_pinn_s0"
    assert (validate({"N": 16, "dose": 1e5, "loss": "mae", "seed": 1}).name({"train.epochs": "40"})
            == "N16_g1_dose1e5_mae_pinn_s1_train.epochs=40")
    assert validate({**job, "model": {"kind": "lsqml"}}).name() == "N64_dose1e4_lsqml_s0"
    assert validate({**job, "model": {"kind": "baseline"}, **GENERALIZE}).name() == (
        "N64_g2_dose1e4_baseline_s0")
    assert validate({**job, "model": {"kind": "lsqml"}}).arm == "N64 lsqml"
    assert validate({**job, "data": {"design": "generalize"}}).arm == (
        "N64 g2 poisson_nll pinn generalize")
    assert format_dose(2500.0) == "2.5e3" and format_dose(1e9) == "1e9"


def _yaml_leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    leaves = {}
    for key, value in tree.items():
        if key in ("defaults", "hydra"):
            continue
        if isinstance(value, dict):
            leaves.update(_yaml_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def _schema_default(path: str) -> Any:
    """The default written in the schema (not resolved: ``data.object.size`` stays None)."""
    *sections, leaf = path.split(".")
    node: Any = JobConfig
    for part in sections:
        node = {f.name: f for f in dataclasses.fields(node)}[part].default_factory()
    item = {f.name: f for f in dataclasses.fields(node)}[leaf]
    return item.default


def test_every_yaml_default_equals_the_schema_default() -> None:
    """conf/ repeats the defaults for the reader; the schema holds them. They cannot drift."""
    groups = {  # file → where its keys sit in the config
        "config.yaml": "", "data/default.yaml": "data.", "data/object/lines.yaml": "data.object.",
        "data/object/grf.yaml": "data.object.", "train/default.yaml": "train.",
        "eval/default.yaml": "eval.", "tracking/default.yaml": "tracking.",
    }
    checked = 0
    for file, prefix in groups.items():
        tree = yaml.safe_load((ROOT / "conf" / file).read_text())
        for key, value in _yaml_leaves(tree, prefix).items():
            if (key, value) == ("data.object.kind", "grf"):  # the other choice of a group
                continue
            default = _schema_default(key)
            assert value == default or (isinstance(default, float) and float(value) == default), (
                f"conf/{file}: {key}={value!r} but the schema's default is {default!r}")
            checked += 1
    assert checked >= 40
    # conf/model/: one option per arm, each holding every setting of the arm's class
    assert {path.stem for path in (ROOT / "conf" / "model").glob("*.yaml")} == set(
        settings_classes())
    for kind, cls in settings_classes().items():
        tree = yaml.safe_load((ROOT / "conf" / "model" / f"{kind}.yaml").read_text())
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        assert set(tree) == set(defaults), f"conf/model/{kind}.yaml: {sorted(tree)}"
        for key, value in tree.items():
            default = defaults[key]
            assert value == default or (isinstance(default, float) and float(value) == default), (
                f"conf/model/{kind}.yaml: {key}={value!r} but {cls.__name__} has {default!r}")


def test_every_patch_size_and_gridsize_validates_on_the_defaults() -> None:
    from ptycho.data import canvas_size, check_canvas, group_positions, make_positions
    from ptycho.pipeline import simulation_spec
    from ptycho.reconstruction.stitch import check_stitch_geometry

    for N in (16, 32, 64, 128, 256):
        for gridsize in (1, 2):
            config = validate(composed(f"N={N}", f"gridsize={gridsize}"))
            spec = simulation_spec(config)
            size = spec.obj.size
            assert size == 2 * N
            offsets = []
            for split, n in (("train", spec.n_train), ("test", spec.n_train)):
                positions = make_positions(spec.scan, n, (size, size), N, seed=1)
                if split == "test":
                    check_stitch_geometry(positions, N=N, keep_fraction=config.eval.keep_fraction)
                offsets.append(group_positions(positions, gridsize, seed=0).offsets)
            check_canvas(offsets, N, canvas_size(offsets, N))


def test_sections_are_frozen_and_data_takes_them_directly() -> None:
    data = DataConfig(object=ObjectConfig(size=40))
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.n_train = 3  # type: ignore[misc]
    assert data.for_patch(16).object.size == 40 and DataConfig().for_patch(16).object.size == 32


def test_an_arms_hash_ignores_the_settings_it_does_not_use() -> None:
    lsqml = validate({"model": {"kind": "lsqml"}}).config_hash
    for other in ({"gridsize": 2}, {"loss": "mae"}, {"train": {"epochs": 3}},
                  {"model": {"kind": "lsqml", "bottleneck_filters": 64}},
                  {"eval": {"phase_sync": "none"}}, {"eval": {"stitch_weighting": "uniform"}}):
        merged = {"model": {"kind": "lsqml"}, **other}
        merged["model"] = {**merged["model"], "kind": "lsqml"}
        assert validate(merged).config_hash == lsqml, other
    assert validate({"model": {"kind": "lsqml", "iterations": 5}}).config_hash != lsqml
    assert validate({"model": {"kind": "epie"}}).config_hash != lsqml
    # ... and the networks' hashes ignore the iterative settings (unchanged from before them)
    pinn = validate({}).config_hash
    assert validate({"model": {"iterations": 5, "tolerance": 0.1}}).config_hash == pinn
    # the baseline does not use the PINN's loss: a loss sweep runs it once
    baseline = validate(BASELINE).config_hash
    assert validate({**BASELINE, "loss": "mae"}).config_hash == baseline
    assert validate({**BASELINE, "gridsize": 2}).config_hash != baseline


def test_every_arms_default_hash_is_pinned() -> None:
    """A hash changes only when the arm's default job changes: a finished run whose hash
    changed is run once more by a resumed sweep, so a change here is announced. LSQML's and
    the baseline's changed with wave 3's house: each arm's model section holds its own
    settings only (LSQML's used to carry ePIE's alpha, the baseline's the iterative settings
    and the merge), and the baseline does not hash the loss it does not use (and needs design
    generalize)."""
    assert {kind: validate({"model": {"kind": kind},
                            **(GENERALIZE if kind == "baseline" else {})}).config_hash
            for kind in settings_classes()} == {
        "baseline": "0509c39f3404c5b2", "epie": "a74a2407284f3595",
        "lsqml": "8a51b89be0af8308", "lsqml_tv": "c3d6d2a6bc70d05d", "pinn": "86594f81464ccc65",
        "rpie": "56319bfe6e9ee6a4"}


def test_phase_sync_auto_is_resolved_by_the_training_length_and_hashes_as_its_choice() -> None:
    """``auto`` (the default) is the likelihood synchronisation for a job that trains, the
    overlap one for a short check; the run records and hashes the choice, so a default job
    keeps the hash it had when ``likelihood`` was the default (pinned above), and an explicit
    choice is kept whatever the length."""
    assert str(composed().eval.phase_sync) == "auto"
    assert str(validate({}).eval.phase_sync) == "likelihood"  # train.epochs 50
    assert str(validate({"train": {"epochs": LIKELIHOOD_SYNC_EPOCHS}}).eval.phase_sync) == \
        "likelihood"
    short = validate({"train": {"epochs": LIKELIHOOD_SYNC_EPOCHS - 1}})
    assert str(short.eval.phase_sync) == "overlap"
    assert short.resolved()["eval"]["phase_sync"] == "overlap"
    assert short.config_hash == validate({"train": {"epochs": LIKELIHOOD_SYNC_EPOCHS - 1},
                                          "eval": {"phase_sync": "overlap"}}).config_hash
    assert validate({}).config_hash == validate(
        {"eval": {"phase_sync": "likelihood"}}).config_hash
    forced = validate({"train": {"epochs": 1}, "eval": {"phase_sync": "likelihood"}})
    assert str(forced.eval.phase_sync) == "likelihood"


def test_each_arm_declares_what_it_uses_and_its_settings_are_its_own() -> None:
    """The declaration every name, hash, tag and label derives from; another arm's setting is
    not an error (a preset sets the network's width for a sweep that runs LSQML too) but is
    not part of the arm's settings; a key of no arm is refused, naming it."""
    assert set(settings_classes()) >= {"pinn", "baseline", "lsqml", "epie"}
    for kind, cls in settings_classes().items():
        assert cls().kind == kind and set(cls.uses) <= set(ARM_DEPENDENT), kind
    assert validate({}).unused == ()
    assert validate(BASELINE).unused == ("loss",)
    assert validate({"model": {"kind": "lsqml"}}).unused == ARM_DEPENDENT
    config = validate({"model": {"kind": "lsqml", "bottleneck_filters": 64, "iterations": 7}})
    assert config.model.iterations == 7 and "bottleneck_filters" not in config.resolved()["model"]
    with pytest.raises(ConfigError, match=r"model\.iteratons: not a setting of any arm"):
        validate({"model": {"kind": "lsqml", "iteratons": 5}})
    with pytest.raises(ConfigError, match=r"model\.kind='unet': must be one of \['baseline'"):
        validate({"model": {"kind": "unet"}})


def test_iterative_settings_are_checked_by_name() -> None:
    config = validate({"model": {"kind": "lsqml"}})
    assert "train" not in config.model.uses
    assert config.training_loss == "lsqml_poisson"
    for bad, message in (
        ({"iterations": 0}, "iterations=0: must be >= 1"),
        ({"device": "tpu"}, "device='tpu': must be one of ['auto', 'cpu', 'gpu']"),
        ({"step_size": 0.0}, "step_size=0.0: must be > 0"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate({"model": {"kind": "lsqml", **bad}})


def test_model_lsqml_composes_from_its_group() -> None:
    config = validate(composed("model=lsqml", "gridsize=2"))
    assert config.model.kind == "lsqml"
    assert config.model.iterations == 100 and not config.model.probe_update
    # a preset's network settings compose for a sweep that also runs LSQML, and are not its
    config = validate(composed("experiment=smoke", "model=lsqml"))
    assert config.model.kind == "lsqml" and not hasattr(config.model, "bottleneck_filters")


def test_labels_keep_object_classes_simulators_and_the_protocol_apart() -> None:
    """Runs on other data, or on data the settings were not chosen on (anything but the lines
    object at seeds 0 and 1), get their own label, so a report never pools them with the
    tuned ones; the tag ``tuning`` says which."""
    tuned = validate({"N": 32})
    assert tuned.tuning == "tuned" and tuned.arm == "N32 g1 poisson_nll pinn"
    fresh = validate({"N": 32, "seed": 5, "model": {"kind": "lsqml"}})
    assert fresh.tuning == "held-out seed" and fresh.arm == "N32 lsqml [held-out seed]"
    other = validate({"N": 32, "data": {"object": {"kind": "grf"}}})
    assert other.arm == "N32 g1 poisson_nll pinn grf [held-out object]"
    held = validate({"N": 32, "seed": 3, "data": {"simulator": "exact",
                                                   "object": {"kind": "cells"}}})
    assert held.tuning == "held-out"
    assert held.arm == "N32 g1 poisson_nll pinn cells exact [held-out]"
    focused = validate({"N": 32, "data": {"probe": {"kind": "focused"}, "simulator": "exact"}})
    assert focused.arm == "N32 g1 poisson_nll pinn focused probe exact"

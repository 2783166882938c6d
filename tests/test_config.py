"""Config composition and validation in-process (fast): the real conf/, the typed schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from ptycho.config import (
    ConfigError,
    config_hash,
    format_dose,
    register_configs,
    run_name,
    validate,
)

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def composed(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_the_default_config_validates() -> None:
    settings = validate(composed())
    assert (settings.N, settings.gridsize, settings.dose, settings.loss) == (64, 1, 1e6,
                                                                            "poisson_nll")
    assert settings.model == "pinn" and settings.train.jit_compile is True
    assert settings.simulation.obj.kind == "lines"
    assert settings.name == "N64_g1_dose1e6_poisson_nll_pinn_s0"


@pytest.mark.parametrize("experiment", ["smoke", "quickstart", "dose_response", "reference_small"])
def test_every_experiment_preset_composes_and_validates(experiment: str) -> None:
    settings = validate(composed(f"experiment={experiment}"))
    assert settings.tracking.experiment == experiment


def test_experiment_values_override_the_defaults() -> None:
    settings = validate(composed("experiment=smoke"))
    assert settings.N == 16 and settings.train.epochs == 2
    assert validate(composed("experiment=smoke", "N=32")).N == 32  # the command line wins


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("N=48", "N=48: N must be an integer power of two >= 16, got 48"),
        ("gridsize=0", "gridsize=0: gridsize must be an integer >= 1, got 0"),
        ("dose=-1", "dose=-1.0: dose must be a positive finite number"),
        ("dose=nan", "dose=nan"),
        ("train.epochs=0", "train.epochs=0"),
        ("train.batch_size=1000", "train.batch_size=1000: exceeds"),
        ("data.object.kind=circles", "data.object.kind must be one of"),
        ("data.scan.kind=spiral", "data.scan.kind must be one of"),
        ("eval.phase_alignment=tilt", "eval.phase_alignment='tilt'"),
        ("data.n_train=3", "data.n_train=3"),
    ],
)
def test_bad_values_name_key_and_value(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate(composed("experiment=smoke", override))
    assert message in str(raised.value)


@pytest.mark.parametrize("override", ["dose=abc", "loss=foo", "Nn=64", "train.epochs=ten"])
def test_typos_and_wrong_types_fail_at_composition(override: str) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as raised:
        composed(override)
    assert override.split("=")[0] in str(raised.value) or override.split("=")[1] in str(
        raised.value)


def test_config_hash_ignores_tracking_and_resume_but_not_physics() -> None:
    base = validate(composed("experiment=smoke")).config_hash
    assert validate(composed("experiment=smoke", "tracking.experiment=other",
                             "resume=false")).config_hash == base
    assert validate(composed("experiment=smoke", "dose=1e4")).config_hash != base
    assert len(base) == 16 and config_hash({"a": 1}) == config_hash({"a": 1, "tracking": 2})


def test_run_names_are_built_from_the_axes() -> None:
    assert run_name(64, 2, 1e4, "poisson_nll", "pinn", 0) == "N64_g2_dose1e4_poisson_nll_pinn_s0"
    assert format_dose(2500.0) == "2.5e3" and format_dose(1e9) == "1e9"

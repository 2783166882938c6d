"""Dataset cache: keyed by everything that determines the data; corrupt entries are rebuilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptycho.config import ObjectConfig
from ptycho.data import SimulationSpec, cache_key, load_or_simulate
from tests.helpers import simulation_spec


def _spec(**overrides: object) -> SimulationSpec:
    fields = {"N": 16, "dose": 1e3, "n_train": 10, "obj": ObjectConfig(size=40)}
    fields.update(overrides)
    return simulation_spec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("design", "files"), [("reconstruct", {"train.npz"}),
                                              ("generalize", {"train.npz", "test.npz"})])
def test_second_call_is_a_hit_with_identical_data(tmp_path: Path, design: str,
                                                  files: set[str]) -> None:
    first, hit = load_or_simulate(_spec(design=design), tmp_path)
    assert not hit
    second, hit = load_or_simulate(_spec(design=design), tmp_path)
    assert hit
    np.testing.assert_array_equal(first.train.counts, second.train.counts)
    np.testing.assert_array_equal(first.test.positions, second.test.positions)
    # One scan is stored once; the pair read back keeps its design.
    assert {path.name for path in (tmp_path / cache_key(_spec(design=design))).glob("*.npz")} \
        == files
    assert second.reconstructs == (design == "reconstruct")


def test_key_depends_on_everything_that_determines_the_data() -> None:
    keys = {
        cache_key(_spec()),
        cache_key(_spec(dose=1e4)),
        cache_key(_spec(N=32, obj=ObjectConfig(size=40))),
        cache_key(_spec(seed=1)),
        cache_key(_spec(noise_seed=1)),
        cache_key(_spec(obj=ObjectConfig(size=40, kind="grf"))),
        cache_key(_spec(design="generalize")),
    }
    assert len(keys) == 7
    assert cache_key(_spec()) == cache_key(_spec())
    assert cache_key(_spec(noise_seed=0)) == cache_key(_spec())  # noise_seed defaults to seed


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_a_corrupt_entry_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    original, _ = load_or_simulate(_spec(), tmp_path)
    entry = tmp_path / cache_key(_spec())
    target = entry / "train.npz"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "flip":
        blob = bytearray(target.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        target.write_bytes(bytes(blob))
    else:
        (entry / "manifest.json").write_text("{not json")
    rebuilt, hit = load_or_simulate(_spec(), tmp_path)
    assert not hit
    np.testing.assert_array_equal(rebuilt.train.counts, original.train.counts)
    _, hit = load_or_simulate(_spec(), tmp_path)
    assert hit  # the rebuilt entry is valid again


def test_an_unwritable_cache_costs_the_cache_not_the_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    pair, hit = load_or_simulate(_spec(), blocker / "cache")
    assert not hit and len(pair.train) == 10
    assert "continuing without caching" in caplog.text
    assert blocker.read_text().startswith("a file")  # nothing written over it

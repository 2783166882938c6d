"""Simulated datasets: objects, probes, scan positions, grouping, simulate, NPZ I/O, cache."""

from ptycho.data.dataset import (
    DiffractionData,
    Scan,
    extract_object_patches,
    simulate,
    simulate_exact,
)
from ptycho.data.grouping import (
    Groups,
    canvas_size,
    check_canvas,
    check_matched_groups,
    concatenate_groups,
    group_positions,
    group_reach,
    holdout_region,
)
from ptycho.data.npz import load_npz, save_npz
from ptycho.data.objects import make_object
from ptycho.data.probe import disc_probe, make_probe
from ptycho.data.scan import make_positions, random_positions, raster_positions
from ptycho.data.simulation import (
    DatasetPair,
    SimulationSpec,
    cache_key,
    load_or_simulate,
    make_datasets,
)

__all__ = [
    "DatasetPair", "DiffractionData", "Groups", "Scan", "SimulationSpec", "cache_key",
    "canvas_size", "check_canvas", "check_matched_groups", "concatenate_groups", "disc_probe",
    "extract_object_patches", "group_positions", "group_reach", "holdout_region", "load_npz",
    "load_or_simulate", "make_datasets", "make_object", "make_positions", "make_probe",
    "random_positions", "raster_positions", "save_npz", "simulate",
    "simulate_exact"
]

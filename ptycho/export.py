"""``python -m ptycho.export <the job's overrides> --out <file.cxi>``: the scan a job would
simulate, written as a measured file (CXI 1.6), so it can be taken to other tools or studied as
if measured (``data.source=file data.path=<file.cxi>``; docs/physics.md §13.4).

The file holds the counts, the positions the reconstructors are given (as sample translations
in metres), the probe they are given, the detector's mask and the geometry; the truth (the
object, the true probe and positions) sits in an extra group, ``entry_1/sample_1/ptycho_truth``,
which other tools ignore and this one scores against.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from types import MappingProxyType

from ptycho import runtime
from ptycho.config import ConfigError, DataSource
from ptycho.runner.sweep import compose_job

__all__ = ["main"]

log = logging.getLogger("ptycho.export")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = MappingProxyType({"wavelength": 1.5498e-10, "distance": 2.0, "detector_pixel": 75e-6})
"""``ptycho.data.measured.Geometry``'s defaults (8 keV, 2 m, 75 µm), here without importing
the data layer (and TensorFlow) before ``--help`` or a bad override."""


def main(argv: list[str] | None = None) -> int:
    """Compose the job from its overrides, simulate (or reuse) its scan, write it as CXI.
    Returns the exit status (2: a bad override or file, named)."""
    parser = argparse.ArgumentParser(prog="python -m ptycho.export", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="the job's overrides, as for run.py")
    parser.add_argument("--out", required=True, type=Path, help="the CXI file to write")
    parser.add_argument("--wavelength", type=float, default=DEFAULTS["wavelength"],
                        help="metres (default: 8 keV)")
    parser.add_argument("--distance", type=float, default=DEFAULTS["distance"],
                        help="sample to detector, metres")
    parser.add_argument("--detector-pixel", type=float, default=DEFAULTS["detector_pixel"],
                        help="detector pixel side, metres")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    runtime.quiet_tensorflow()  # before the data layer imports it
    from ptycho.data.cxi import write_cxi
    from ptycho.data.measured import Geometry, raw_scan
    from ptycho.data.simulation import load_or_simulate
    from ptycho.truth_free import data_spec

    try:
        config = compose_job(args.overrides, PROJECT_ROOT)
        if config.data.source != DataSource.simulate:
            raise ConfigError("data.source=file: the scan is a file already (export a "
                              "simulated job)")
        cache = Path(config.data.cache_dir or PROJECT_ROOT / "outputs/cache/datasets")
        pair, hit = load_or_simulate(data_spec(config), cache if config.data.cache else None)
        geometry = Geometry(args.wavelength, args.distance, args.detector_pixel)
        path = write_cxi(args.out, raw_scan(pair.train, geometry))
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scan = pair.train
    print(f"wrote {path}: {len(scan)} patterns N={scan.N}, {scan.measured_dose:.6g} photons per "
          f"pattern ({'cached' if hit else 'simulated'}), {geometry.pixel_size(scan.N):.4g} m "
          f"per object pixel; study it with: python run.py data.source=file data.path={path} "
          f"N={scan.N}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

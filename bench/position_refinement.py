"""Can a network's scan positions be refined from its patches alone? (issue 29, item 3)

A g=1 network predicts each patch from its pattern alone, so a position error moves only where
the stitch puts the patch. The natural refinement stitches the patches at the current positions,
cuts the stitched object of all the *other* patches at each position (leave one out) and moves
the position by the sub-pixel shift that registers the patch with that cut (cross-correlation
weighted by the probe's amplitude, at most ``--max-step`` px per round and axis, less the mean
shift: the gauge). Here the patches are the true object's, cut at the true positions, plus
complex Gaussian noise of standard deviation ``--noise`` per pixel (a network's error stand-in);
the positions given are the true ones plus 0.5 px per axis. The table is the RMS position error
after the gauge (``ptycho.data.scan.position_error``) after each number of rounds. Not adopted
in the pipeline: see docs/results/2026-12-07-conditions.md.

    python bench/position_refinement.py
    python bench/position_refinement.py --noise 0 0.05 0.1 --rounds 2 4 8 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def others(patches, positions, object_shape, values):
    """At each position, the probe-weighted stitch of every other patch (leave one out)."""
    import numpy as np
    import tensorflow as tf

    from ptycho import physics

    blocks = physics.PatchBlocks(positions, patches.shape[-1], object_shape)
    numerator = blocks.spread(tf.constant((patches * values)[None].astype(np.complex64)))
    denominator = blocks.spread(tf.broadcast_to(tf.constant(values.astype(np.complex64)),
                                                (1, *patches.shape)))
    own_numerator = blocks.cut(numerator)[0].numpy() - patches * values
    own_denominator = np.real(blocks.cut(denominator)[0].numpy()) - values
    return np.where(own_denominator > 1e-3, own_numerator / np.maximum(own_denominator, 1e-3), 0)


def refine(patches, positions, object_shape, probe, rounds, max_step):
    import numpy as np
    from skimage.registration import phase_cross_correlation

    from ptycho.data.scan import valid_range

    weight = np.abs(probe) ** 2
    values = (weight / weight.max()).astype(np.float32)
    amplitude = np.sqrt(values)
    bounds = valid_range(object_shape, patches.shape[-1])
    positions = positions.copy()
    for _ in range(rounds):
        cut = others(patches, positions, object_shape, values)
        shifts = np.array([phase_cross_correlation(cut[k] * amplitude, patches[k] * amplitude,
                                                   upsample_factor=20, normalization=None)[0]
                           for k in range(len(patches))])
        step = np.clip(shifts[:, ::-1], -max_step, max_step)
        positions = np.clip(positions + step - step.mean(axis=0), bounds[:, 0], bounds[:, 1])
    return positions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.1, 0.3])
    parser.add_argument("--rounds", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--max-step", type=float, default=0.5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from ptycho.config import ObjectConfig, ProbeConfig
    from ptycho.data import make_object
    from ptycho.data.dataset import extract_object_patches
    from ptycho.data.probe import focused_probe
    from ptycho.data.scan import position_error, raster_positions

    N, obj = 32, make_object(ObjectConfig(size=96), 3, 1)
    probe = focused_probe(N, ProbeConfig(kind="focused", astigmatism_x=0.5, coma_y=0.3))
    true = raster_positions(512, obj.shape, N, seed=1, jitter=1.0)
    rng = np.random.default_rng(0)
    given = np.clip(true + 0.5 * rng.standard_normal(true.shape), N / 2, 96 - N / 2 - 1)
    patches = extract_object_patches(obj, true, N)
    print(f"given: {position_error(given, true)['rms']:.3f} px rms (after the mean shift)")
    print(f"{'noise':>6} | " + " | ".join(f"{rounds:>2} rounds" for rounds in args.rounds)
          + " | seconds")
    for noise in args.noise:
        noisy = (patches + noise * (rng.standard_normal(patches.shape)
                                    + 1j * rng.standard_normal(patches.shape))).astype(np.complex64)
        start, cells = time.perf_counter(), []
        for rounds in args.rounds:
            refined = refine(noisy, given, obj.shape, probe, rounds, args.max_step)
            cells.append(f"{position_error(refined, true)['rms']:>6.3f} px")
        print(f"{noise:>6g} | " + " | ".join(cells) + f" | {time.perf_counter() - start:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Figures a scientist looks at. The only module that imports matplotlib.

Figures are built as ``matplotlib.figure.Figure`` objects with the Agg canvas: no pyplot state,
no display, nothing kept alive after the caller drops them. Saving is the caller's job
(``figure.savefig(path)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ptycho.evaluation import Evaluation, FRCCurve

__all__ = [
    "diffraction_figure",
    "frc_figure",
    "reconstruction_figure",
    "training_curves_figure",
]


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _show(figure: Figure, axes, image: np.ndarray, title: str, cmap: str, **kwargs) -> None:
    artist = axes.imshow(image, cmap=cmap, interpolation="nearest", **kwargs)
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.colorbar(artist, ax=axes, fraction=0.046, pad=0.02)


def reconstruction_figure(evaluation: Evaluation, title: str = "") -> Figure:
    """Ground truth, reconstruction and error for amplitude (row 1) and phase (row 2), each with
    a colour bar; the headline metrics in the title."""
    figure = _figure(11, 7)
    axes = figure.subplots(2, 3)
    m = evaluation.metrics
    rows = (
        ("amplitude", evaluation.amplitude_truth, evaluation.amplitude, "gray", "", "amp"),
        ("phase", evaluation.phase_truth, evaluation.phase, "twilight", " (rad)", "phase"),
    )
    for row, (name, truth, image, cmap, unit, key) in enumerate(rows):
        low, high = float(truth.min()), float(truth.max())
        _show(figure, axes[row, 0], truth, f"{name} ground truth{unit}", cmap, vmin=low,
              vmax=high)
        _show(figure, axes[row, 1], image, f"{name} reconstruction{unit}", cmap, vmin=low,
              vmax=high)
        error = image - truth
        bound = float(np.abs(error).max()) or 1.0
        _show(
            figure, axes[row, 2], error,
            f"{name} error  MAE {m[f'{key}_mae']:.3g}  SSIM {m[f'{key}_ssim']:.3f}",
            "RdBu_r", vmin=-bound, vmax=bound,
        )
    headline = (
        f"amp PSNR {m['amp_psnr']:.1f} dB, SSIM {m['amp_ssim']:.3f}, FRC50 {m['amp_frc50']:.1f}"
        f"  |  phase PSNR {m['phase_psnr']:.1f} dB, SSIM {m['phase_ssim']:.3f}, "
        f"FRC50 {m['phase_frc50']:.1f}"
    )
    figure.suptitle(f"{title}\n{headline}" if title else headline, fontsize=10)
    return figure


def diffraction_figure(
    measured: np.ndarray, predicted: np.ndarray, count: int = 4, title: str = ""
) -> Figure:
    """Measured counts beside the model's expected counts for the first ``count`` patterns,
    on one log colour scale per pair.

    Args:
        measured: ``(K, N, N)`` photon counts.
        predicted: ``(K, N, N)`` expected counts λ.
    """
    measured = np.asarray(measured, np.float64)
    predicted = np.asarray(predicted, np.float64)
    count = max(1, min(count, len(measured)))
    figure = _figure(3.0 * count, 6)
    axes = np.atleast_2d(figure.subplots(2, count)).reshape(2, count)
    for i in range(count):
        positive = np.concatenate([measured[i][measured[i] > 0], predicted[i][predicted[i] > 0]])
        high = float(positive.max()) if positive.size else 1.0
        low = max(high * 1e-6, 0.1)
        norm = LogNorm(vmin=low, vmax=max(high, low * 10))
        _show(figure, axes[0, i], np.maximum(measured[i], low), f"measured #{i}  Σ="
              f"{measured[i].sum():.3g}", "magma", norm=norm)
        _show(figure, axes[1, i], np.maximum(predicted[i], low), f"predicted #{i}  Σ="
              f"{predicted[i].sum():.3g}", "magma", norm=norm)
    figure.suptitle(title or "diffraction: measured counts (top) vs model λ (bottom), log scale",
                    fontsize=10)
    return figure


def training_curves_figure(history: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Train and validation loss per epoch, with the learning rate on a log axis beside."""
    figure = _figure(7, 4)
    axes = figure.subplots()
    for key, style in (("loss", "-o"), ("val_loss", "-s")):
        values = list(history.get(key, []))
        if values:
            axes.plot(range(1, len(values) + 1), values, style, label=key, markersize=3)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    rates = list(history.get("learning_rate", []))
    if rates:
        twin = axes.twinx()
        twin.plot(range(1, len(rates) + 1), rates, "--", color="gray", label="learning rate")
        twin.set_yscale("log")
        twin.set_ylabel("learning rate")
        handles, labels = axes.get_legend_handles_labels()
        twin_handles, twin_labels = twin.get_legend_handles_labels()
        axes.legend(handles + twin_handles, labels + twin_labels, loc="best", fontsize=8)
    else:
        axes.legend(loc="best", fontsize=8)
    axes.set_title(title or "training curves", fontsize=10)
    return figure


def frc_figure(curves: Mapping[str, FRCCurve], title: str = "") -> Figure:
    """FRC per ring for each curve, with the 0.5 and 1/7 thresholds and crossings marked."""
    figure = _figure(7, 4)
    axes = figure.subplots()
    for name, curve in curves.items():
        line = axes.plot(curve.rings, curve.values, label=name)[0]
        for threshold, marker in ((0.5, "o"), (1 / 7, "s")):
            ring = curve.crossing(threshold)
            axes.plot([ring], [threshold], marker, color=line.get_color(), markersize=6)
    axes.axhline(0.5, color="black", linestyle="--", linewidth=0.8, label="0.5")
    axes.axhline(1 / 7, color="black", linestyle=":", linewidth=0.8, label="1/7")
    axes.set_xlabel("ring index (Nyquist = side/2)")
    axes.set_ylabel("FRC")
    axes.set_ylim(-0.2, 1.05)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(title or "Fourier ring correlation", fontsize=10)
    return figure

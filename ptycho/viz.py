"""Figures a scientist looks at. The only module that imports matplotlib.

Figures are built as ``matplotlib.figure.Figure`` objects with the Agg canvas: no pyplot state,
no display, nothing kept alive after the caller drops them. Saving is the caller's job
(``figure.savefig(path)``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ptycho.config import format_dose
from ptycho.evaluation import Evaluation, FRCCurve

__all__ = [
    "bias_variance_figure", "diffraction_figure", "dose_response_figure", "frc_figure",
    "limit_figure", "mismatch_figure", "probe_figure", "reconstruction_figure",
    "reconstruction_grid_figure", "training_curves_figure"
]


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _show(figure: Figure, axes, image: np.ndarray, title: str, cmap: str, *,
          colorbar: bool = True, **kwargs):
    """``image`` on ``axes`` without ticks, titled, with its own colour bar unless told not;
    returns the image artist (to share one colour bar between panels)."""
    artist = axes.imshow(image, cmap=cmap, interpolation="nearest", **kwargs)
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    if colorbar:
        figure.colorbar(artist, ax=axes, fraction=0.046, pad=0.02)
    return artist


def reconstruction_figure(evaluation: Evaluation, title: str = "") -> Figure:
    """Ground truth, reconstruction and error for amplitude (row 1) and phase (row 2): truth and
    reconstruction on one colour scale (one bar), the error on its own; the headline metrics in
    the title."""
    figure = _figure(11, 7)
    axes = figure.subplots(2, 3)
    m = evaluation.metrics
    rows = (
        ("amplitude", evaluation.amplitude_truth, evaluation.amplitude, "gray", "", "amp"),
        ("phase", evaluation.phase_truth, evaluation.phase, "twilight", " (rad)", "phase"),
    )
    for row, (name, truth, image, cmap, unit, key) in enumerate(rows):
        low, high = float(truth.min()), float(truth.max())
        _show(figure, axes[row, 0], truth, f"{name} {evaluation.reference_name}{unit}", cmap,
              vmin=low, vmax=high, colorbar=False)
        shared = _show(figure, axes[row, 1], image, f"{name} reconstruction{unit}", cmap,
                       vmin=low, vmax=high, colorbar=False)
        figure.colorbar(shared, ax=[axes[row, 0], axes[row, 1]], fraction=0.046, pad=0.02)
        error = image - truth
        bound = float(np.abs(error).max()) or 1.0
        _show(figure, axes[row, 2], error,
              f"{name} {'error' if evaluation.reference_name == 'ground truth' else 'difference'}"
              f"  MAE {m[f'{key}_mae']:.3g}  SSIM {m[f'{key}_ssim']:.3f}", "RdBu_r",
              vmin=-bound, vmax=bound)
    headline = (
        f"amp PSNR {m['amp_psnr']:.1f} dB, SSIM {m['amp_ssim']:.3f}, FRC50 {m['amp_frc50']:.1f}"
        f"  |  phase PSNR {m['phase_psnr']:.1f} dB, SSIM {m['phase_ssim']:.3f}, "
        f"FRC50 {m['phase_frc50']:.1f}"
    )
    if evaluation.reference_name != "ground truth":
        headline = f"against the {evaluation.reference_name}: {headline}"
    figure.suptitle(f"{title}\n{headline}" if title else headline, fontsize=10)
    return figure


def limit_figure(evaluation: Evaluation, maps: Mapping[str, np.ndarray], title: str = ""
                 ) -> Figure:
    """The reconstruction's error beside the Cramér–Rao limit, pixel by pixel, for amplitude
    (row 1) and phase (row 2): ``|error|`` of the aligned reconstruction and the bound's standard
    deviation ``√(variance bound)`` (the smallest any unbiased estimator could have there), on
    one colour scale per row. ``maps`` holds ``amp_variance``, ``phase_variance`` and their
    ``*_stderr`` at the job's dose (:meth:`~ptycho.evaluation.limit.LimitEstimate.maps_at_scale`).
    """
    figure = _figure(8, 7)
    axes = figure.subplots(2, 2)
    rows = (("amplitude", evaluation.amplitude - evaluation.amplitude_truth, "amp", ""),
            ("phase", evaluation.phase - evaluation.phase_truth, "phase", " (rad)"))
    for row, (name, error, key, unit) in enumerate(rows):
        bound = np.sqrt(np.maximum(maps[f"{key}_variance"], 0.0))
        magnitude = np.abs(error)
        high = float(np.percentile(np.concatenate([magnitude.ravel(), bound.ravel()]), 99)) or 1.0
        rms = float(np.sqrt(np.mean(error ** 2)))
        limit_rms = float(np.sqrt(np.mean(maps[f"{key}_variance"])))
        _show(figure, axes[row, 0], magnitude,
              f"{name} |error|{unit}, RMS {rms:.3g}", "magma", vmin=0, vmax=high,
              colorbar=False)
        shared = _show(figure, axes[row, 1], bound,
                       f"{name} Cramér–Rao std{unit}, RMS {limit_rms:.3g}", "magma",
                       vmin=0, vmax=high, colorbar=False)
        figure.colorbar(shared, ax=[axes[row, 0], axes[row, 1]], fraction=0.046, pad=0.02)
    relative = [np.nanmedian(maps[f"{k}_variance_stderr"] / maps[f"{k}_variance"])
                for k in ("amp", "phase")]
    note = ("bound per pixel: exact" if max(relative) == 0 else
            f"bound per pixel: Hutchinson estimate, median relative standard error "
            f"{relative[0]:.2f} (amp), {relative[1]:.2f} (phase)")
    figure.suptitle(f"{title}\n{note}" if title else note, fontsize=10)
    return figure


def diffraction_figure(measured: np.ndarray, predicted: np.ndarray, count: int = 4,
                       title: str = "", mask: np.ndarray | None = None) -> Figure:
    """Measured counts beside the model's expected counts for the first ``count`` patterns,
    on one log colour scale per pair; pixels the detector does not measure left blank.

    Args:
        measured: ``(K, N, N)`` photon counts.
        predicted: ``(K, N, N)`` expected counts λ.
        mask: ``(N, N)`` bool, ``True`` where the detector measures; ``None``: all.
    """
    measured = np.asarray(measured, np.float64)
    predicted = np.asarray(predicted, np.float64)
    if mask is not None:  # NaN: drawn in the background colour, not as zero counts
        measured = np.where(mask, measured, np.nan)
        predicted = np.where(mask, predicted, np.nan)
    count = max(1, min(count, len(measured)))
    figure = _figure(3.0 * count, 6)
    axes = np.atleast_2d(figure.subplots(2, count)).reshape(2, count)
    for i in range(count):
        positive = np.concatenate([measured[i][measured[i] > 0],
                                   predicted[i][predicted[i] > 0]])
        high = float(positive.max()) if positive.size else 1.0
        low = max(high * 1e-6, 0.1)
        norm = LogNorm(vmin=low, vmax=max(high, low * 10))
        _show(figure, axes[0, i], np.maximum(measured[i], low), f"measured #{i}  Σ="
              f"{np.nansum(measured[i]):.3g}", "magma", norm=norm, colorbar=False)
        artist = _show(figure, axes[1, i], np.maximum(predicted[i], low), f"predicted #{i}  Σ="
                       f"{np.nansum(predicted[i]):.3g}", "magma", norm=norm, colorbar=False)
        # One bar per pair (they share the scale), without minor ticks: a log colour bar's
        # minor ticks cost more to lay out than the rest of the figure.
        bar = figure.colorbar(artist, ax=[axes[0, i], axes[1, i]], fraction=0.046, pad=0.02,
                              aspect=40)
        bar.ax.minorticks_off()
    figure.suptitle(title or "diffraction: measured counts (top) vs model λ (bottom), log scale",
                    fontsize=10)
    return figure


def probe_figure(probes: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """One column per probe: amplitude, phase (radians, shown where the amplitude is above 5% of
    its peak) and its far field ``|fftshift(FFT2(P))|²/N²`` (the pupil, log scale).

    Args:
        probes: label → ``(N, N)`` complex probe (arbitrary amplitude units).
    """
    count = max(1, len(probes))
    figure = _figure(3.0 * count, 8.4)
    axes = np.atleast_2d(figure.subplots(3, count)).reshape(3, count)
    for column, (label, probe) in enumerate(probes.items()):
        probe = np.asarray(probe, np.complex128)
        amplitude = np.abs(probe)
        phase = np.where(amplitude > 0.05 * amplitude.max(), np.angle(probe), np.nan)
        far = np.abs(np.fft.fftshift(np.fft.fft2(probe))) ** 2 / probe.size
        high = float(far.max()) or 1.0
        _show(figure, axes[0, column], amplitude, f"{label}: amplitude", "gray")
        _show(figure, axes[1, column], phase, "phase (rad)", "twilight", vmin=-np.pi,
              vmax=np.pi)
        bar = figure.colorbar(
            _show(figure, axes[2, column], np.maximum(far, high * 1e-6), "far field (log)",
                  "magma", colorbar=False, norm=LogNorm(vmin=high * 1e-6, vmax=high)),
            ax=axes[2, column], fraction=0.046, pad=0.02)
        bar.ax.minorticks_off()
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def positions_figure(positions: Mapping[str, np.ndarray], title: str = "",
                     magnify: float = 5.0) -> Figure:
    """Scan positions: the true ones as points, the error of each other set (given, refined)
    as arrows from the truth, ``magnify`` times their length, after removing their mean (the
    gauge a reconstruction cannot fix).

    Args:
        positions: label → ``(M, 2)`` ``(x, y)`` pixels; ``true`` among them.
    """
    true = np.asarray(positions["true"], np.float64)
    others = [(label, np.asarray(value, np.float64)) for label, value in positions.items()
              if label != "true"]
    figure = _figure(4.2 * max(1, len(others)), 4.4)
    axes = np.atleast_1d(figure.subplots(1, max(1, len(others))))
    for ax, (label, estimate) in zip(axes, others, strict=False):
        error = estimate - true
        error = error - error.mean(axis=0)
        rms = float(np.sqrt(np.mean(np.sum(error**2, axis=1))))
        ax.scatter(true[:, 0], true[:, 1], s=4, color="0.5")
        ax.quiver(true[:, 0], true[:, 1], magnify * error[:, 0], magnify * error[:, 1],
                  angles="xy", scale_units="xy", scale=1, width=0.004, color="tab:red")
        ax.set_title(f"{label} − true (×{magnify:g}), rms {rms:.2f} px", fontsize=9)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def training_curves_figure(history: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Train and validation loss per epoch, with the learning rate on a log axis beside; for an
    iterative arm, its data error (Poisson NLL per photon) per iteration."""
    figure = _figure(7, 4)
    axes = figure.subplots()
    if "nll_per_photon" in history and "loss" not in history:
        values = list(history["nll_per_photon"])
        axes.plot(range(1, len(values) + 1), values, "-", label="NLL per photon")
        axes.set_xlabel("iteration")
        axes.set_ylabel("Poisson NLL per photon (nats)")
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8)
        axes.set_title(title or "data error per iteration", fontsize=10)
        return figure
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


TRUTH_FREE_PANELS = (
    ("amp_frc_halfbit_nyquist", "halfsplit_amp_frc_halfbit",
     "amplitude FRC at ½ bit (fraction of Nyquist)\nsolid: vs truth, dashed: half-split"),
    ("phase_frc_halfbit_nyquist", "halfsplit_phase_frc_halfbit",
     "phase FRC at ½ bit (fraction of Nyquist)\nsolid: vs truth, dashed: half-split"),
    ("amp_ssim", "ref_amp_ssim", "amplitude SSIM\nsolid: vs truth, dashed: vs full-dose reference"),
)
"""The truth-free figure's panels: the truth metric, the truth-free one and the title."""


def truth_free_figure(summary: pd.DataFrame, title: str = "") -> Figure:
    """The truth-free metrics against dose beside the truth's (docs/physics.md §13.3): one panel
    per pair (:data:`TRUTH_FREE_PANELS`), a colour per arm, solid the truth metric's median over
    replicates, dashed the truth-free metric's; a measured scan without its truth has only the
    dashed lines."""
    arms = sorted(summary["arm"].unique())
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(arms)}
    figure = _figure(4.2 * len(TRUTH_FREE_PANELS), 3.8)
    axes = figure.subplots(1, len(TRUTH_FREE_PANELS), squeeze=False)[0]
    for ax, (truth, free, label) in zip(axes, TRUTH_FREE_PANELS, strict=True):
        for arm, part in summary.groupby("arm"):
            part = part.sort_values("dose")
            for metric, style in ((truth, "-"), (free, "--")):
                column = f"{metric}_median"
                if column in part and part[column].notna().any():
                    ax.plot(part["dose"], part[column], marker="o", markersize=3,
                            linestyle=style, color=colours[arm],
                            label=arm if style == "--" else None)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("dose (photons per pattern)", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.suptitle(title or "truth-free metrics (dashed) beside the truth's (solid)",
                    fontsize=10)
    if handles:  # below the panels, clear of their axis labels
        figure.tight_layout(rect=(0, 0.06 + 0.045 * ((len(labels) + 1) // 2), 1, 0.95))
        figure.legend(handles, labels, loc="lower center", ncol=min(2, len(labels)), fontsize=7)
    return figure


def conditions_figure(summary: pd.DataFrame, metrics: Sequence[tuple[str, str]] = (
        ("amp_frc50_nyquist", "amplitude FRC50 (fraction of Nyquist)"),
        ("phase_frc50_nyquist", "phase FRC50 (fraction of Nyquist)")),
        title: str = "") -> Figure:
    """One dose-response panel per experimental condition (columns) and metric (rows): a line
    per arm (colour) and refinement (solid: none, dashed: refined) through the median over
    replicates, and in each non-ideal panel the same arm's ideal curve in thin grey.

    Args:
        summary: one row per (arm, dose) with ``condition``, ``refinement`` and
            ``<metric>_median`` columns (:func:`experiments.dose_response.analyse.summarise`).
    """
    table = summary.assign(base=summary["arm"].str.split(" · ").str[0],
                           refinement=summary["refinement"].fillna(""),
                           condition=summary["condition"].fillna("ideal").replace("", "ideal"))
    conditions = ["ideal", *sorted(set(table["condition"]) - {"ideal"},
                                   key=lambda name: (name.count("+"), name))]
    bases = sorted(table["base"].unique())
    colours = {base: f"C{i % 10}" for i, base in enumerate(bases)}
    figure = _figure(4.0 * len(conditions), 3.4 * len(metrics))
    axes = np.atleast_2d(figure.subplots(len(metrics), len(conditions), sharey="row",
                                         squeeze=False))
    for row, (metric, label) in enumerate(metrics):
        column_name = f"{metric}_median"
        for column, condition in enumerate(conditions):
            ax = axes[row, column]
            for (base, refinement), part in table.groupby(["base", "refinement"]):
                part = part.sort_values("dose")
                if column_name not in part:
                    continue
                ideal = part[part["condition"] == "ideal"]
                if condition != "ideal" and not ideal.empty:
                    ax.plot(ideal["dose"], ideal[column_name], color="0.75", linewidth=0.8,
                            linestyle="--" if refinement else "-")
                shown = part[part["condition"] == condition]
                if not shown.empty:
                    ax.plot(shown["dose"], shown[column_name], marker="o", markersize=3,
                            color=colours[base], linestyle="--" if refinement else "-",
                            label=f"{base}{' (' + refinement + ')' if refinement else ''}")
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(condition, fontsize=9)
            if column == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == len(metrics) - 1:
                ax.set_xlabel("dose (photons per pattern)", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.suptitle(title or "dose response per condition (grey: the arm's ideal curve)",
                    fontsize=10)
    if handles:  # below the panels, clear of their axis labels
        figure.tight_layout(rect=(0, 0.1, 1, 0.97))
        figure.legend(handles, labels, loc="lower center", ncol=min(2, len(labels)), fontsize=8)
    return figure


def dose_response_figure(
    summary: pd.DataFrame, failures: pd.DataFrame,
    metrics: Sequence[tuple[str, str]] = (
        ("amp_frc50_nyquist", "amplitude FRC50 (fraction of Nyquist)"),
        ("amp_nrmse", "amplitude NRMSE"),
        ("amp_ssim", "amplitude SSIM"),
        ("phase_frc50_nyquist", "phase FRC50 (fraction of Nyquist)"),
        ("phase_nrmse", "phase NRMSE"),
        ("phase_ssim", "phase SSIM"),
        ("amp_mse", "amplitude MSE"),
        ("phase_mse", "phase MSE (rad²)"),
        ("crb_efficiency", "Cramér–Rao efficiency (bound / MSE), where informative"),
        ("object_nll_excess_per_photon", "scored object's NLL − truth's (nats per photon)"),
    ),
    title: str = "", degenerate: pd.DataFrame | None = None, x: str = "dose",
) -> Figure:
    """Metric versus dose (log x), one line per arm through the median over replicates with its
    interval as a band (``<metric>_ci_low``/``_ci_high``, named by the ``interval`` column: a
    bootstrap or the range; else the min–max), a red × on the dose axis where runs of that arm
    failed, and degenerate (collapsed) runs as open triangles, outside the median and band. MSE
    panels are on a log scale with the Cramér–Rao bound as a dashed black line per N (where
    ``<metric>_crb_median`` or ``_crb_mean`` is there); ``crb_efficiency`` draws each arm's
    amplitude (solid) and phase (dotted) efficiency where the bound is below the best constant
    image's MSE (dotted black on the MSE panels); ``object_nll_excess_per_photon`` has a line at
    0 and the Wilks reference of a converged maximum-likelihood fit (dashed).

    Args:
        summary: one row per (arm, dose) with columns ``arm``, ``dose`` and ``<metric>_median``
            (or ``_mean``), ``<metric>_ci_low``/``_ci_high`` or ``<metric>_min``/``_max``.
        failures: one row per (arm, dose) with ``n_failed`` > 0.
        degenerate: the degenerate runs (``arm``, ``dose`` and metric columns), or ``None``.
        x: ``dose`` (photons per pattern) or ``fluence`` (photons per object pixel² on the
            scored region: ``fluence_median`` in ``summary``, ``fluence`` in ``degenerate``).
    """
    if x not in ("dose", "fluence"):
        raise ValueError(f"x must be 'dose' or 'fluence', got {x!r}")
    where = "dose" if x == "dose" else "fluence_median"
    if where not in summary:
        raise ValueError("the summary has no fluence (runs logged before it was measured)")
    x_label = ("dose (photons per pattern)" if x == "dose"
               else "fluence (photons per pixel² on the scored region)")
    columns = 3
    rows = -(-len(metrics) // columns)
    figure = _figure(5.0 * columns, 3.8 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    arms = sorted(summary["arm"].unique()) if len(summary) else []
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(arms)}
    failed = failures[failures["n_failed"] > 0]
    collapsed = degenerate if degenerate is not None else pd.DataFrame(columns=["arm", "dose"])
    for ax, (metric, label) in zip(axes, metrics, strict=False):
        if metric == "crb_efficiency":
            _efficiency_panel(ax, summary, arms, colours, where)
        _median_lines(ax, summary, metric, arms, colours, where)
        if metric in collapsed and len(collapsed):
            for arm, part in collapsed.groupby("arm"):
                ax.plot(part[x], part[metric], "v", markerfacecolor="none",
                        markeredgecolor=colours.get(arm, "grey"), markersize=8,
                        linestyle="none")
        for _, row in failed.iterrows():
            if x == "dose" or np.isfinite(row.get(where, np.nan)):
                ax.plot([row[where]], [0.0], "x", color="red", markersize=9,
                        transform=ax.get_xaxis_transform(), clip_on=False)
        _references(ax, summary, metric, where)
        ax.set(xscale="log", xlabel=x_label, ylabel=label)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if axes[0].get_legend_handles_labels()[0]:  # no line at all when every run failed
        axes[0].legend(fontsize=7, loc="best")
    legend = (f"line: median over replicates; band: {_bands(summary)}; open triangles: "
              "degenerate runs (not in the median); red x: failed runs")
    figure.suptitle(f"{title or 'dose response'}\n{legend}", fontsize=10)
    return figure


def _references(ax, summary: pd.DataFrame, metric: str, where: str) -> None:
    """A panel's reference lines: on an MSE panel (log scale) the Cramér–Rao bound and the
    best constant image; on an NLL-excess panel 0 and the Wilks value of a converged fit."""
    if metric.endswith("_mse"):
        _reference_lines(ax, summary, f"{metric}_crb", "Cramér–Rao bound", "--", where)
        _reference_lines(ax, summary, f"{metric}_constant", "best constant image", ":", where)
        ax.set_yscale("log")
    if metric.endswith("nll_excess_per_photon"):
        ax.axhline(0.0, color="grey", linestyle="-", linewidth=0.6)
        _reference_lines(ax, summary, "wilks_nll_excess_per_photon", "converged fit (Wilks)",
                         "--", where)


def _bands(summary: pd.DataFrame) -> str:
    """What the bands are, from the summary's ``interval`` column."""
    if "interval" not in summary:
        return "bootstrap 95% interval of the median"
    labels = sorted({"range of the replicates" if label == "range" else f"{label} of the median"
                     for label in summary["interval"].dropna() if label})
    return "; ".join(labels) or "none"


def _median_lines(ax, summary: pd.DataFrame, metric: str, arms: Sequence[str],
                  colours: Mapping[str, str], where: str) -> None:
    """Each arm's median (or mean) of ``metric`` against ``where``, its interval (or min–max)
    as a band."""
    centre = f"{metric}_median" if f"{metric}_median" in summary else f"{metric}_mean"
    low, high = ((f"{metric}_ci_low", f"{metric}_ci_high") if f"{metric}_ci_low" in summary
                 else (f"{metric}_min", f"{metric}_max"))
    for arm in arms:
        part = summary[summary["arm"] == arm].sort_values("dose")
        if centre not in part or part[centre].isna().all():
            continue
        ax.plot(part[where], part[centre], "-o", color=colours[arm], label=arm, markersize=4)
        if low in part:
            ax.fill_between(part[where], part[low], part[high], color=colours[arm], alpha=0.18,
                            linewidth=0)


def _reference_lines(axes, summary: pd.DataFrame, column: str, label: str, style: str,
                     where: str = "dose") -> None:
    """A per-scan reference against dose (or the ``where`` column), one black line per N
    (every arm of one N shares its scans, hence the reference): ``column`` is its median (or
    mean) over the runs, e.g. ``amp_mse_crb`` (the Cramér–Rao bound), ``amp_mse_constant``
    (the best constant image), ``wilks_nll_excess_per_photon``."""
    column = f"{column}_median" if f"{column}_median" in summary else f"{column}_mean"
    if column not in summary or summary[column].isna().all():
        return
    keys = [key for key in ("N", "object") if key in summary
            and (key == "N" or summary[key].nunique() > 1)]  # object classes: their own scans
    groups = summary.groupby(keys) if keys else [((), summary)]
    for shade, (values, part) in enumerate(groups):
        values = values if isinstance(values, tuple) else (values,)
        columns = [column] if where == "dose" else [column, where]
        line = part.groupby("dose")[columns].mean().dropna().sort_index()
        name = " ".join(f"{key}={value}" if key == "N" else str(value)
                        for key, value in zip(keys, values, strict=True))
        if len(line):
            axes.plot(line.index if where == "dose" else line[where], line[column], style,
                      color=_GREYS[shade % len(_GREYS)], linewidth=1.1,
                      label=f"{label} {name}".strip())
    axes.legend(fontsize=6, loc="best")


_GREYS = ("black", "dimgrey", "darkgrey")  # a reference line per (N, object class)


def _efficiency_panel(axes, summary: pd.DataFrame, arms: Sequence[str],
                      colours: Mapping[str, str], where: str = "dose") -> None:
    """Each arm's bound / MSE against dose (or the ``where`` column): amplitude solid, phase
    dotted; 1 is the limit. Drawn only where the bound is informative: below the best
    constant image's MSE (above it, any image beats "unbiased" and the ratio says nothing)."""
    def median(part: pd.DataFrame, name: str) -> pd.Series:
        key = f"{name}_median" if f"{name}_median" in part else f"{name}_mean"
        return part[key] if key in part else pd.Series(np.nan, part.index)

    drawn = computed = False
    for arm in arms:
        part = summary[summary["arm"] == arm].sort_values("dose")
        for name, style in (("amp", "-o"), ("phase", ":s")):
            efficiency = median(part, f"{name}_crb_efficiency")
            computed |= not efficiency.isna().all()
            constant = median(part, f"{name}_mse_constant")
            informative = ~(median(part, f"{name}_mse_crb") >= constant)  # unknown: drawn
            shown = efficiency.where(informative)
            if not shown.isna().all():
                axes.plot(part[where], shown, style, color=colours[arm], markersize=3)
                drawn = True
    axes.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    axes.set_yscale("log")
    note = ("solid: amplitude, dotted: phase; 1 = the limit" if drawn else
            "the bound lies above the best constant image at every dose: no efficiency"
            if computed else "no Cramér–Rao bound in this sweep (eval.crb=false)")
    axes.text(0.02, 0.02, note, fontsize=6 if drawn else 8, transform=axes.transAxes)


def reconstruction_grid_figure(images: Mapping[tuple[float, str], np.ndarray],
                               doses: Sequence[float], arms: Sequence[str], title: str = ""
                               ) -> Figure:
    """Reconstructed amplitudes, rows = dose, columns = arm; an empty cell where none exists."""
    figure = _figure(2.4 * max(1, len(arms)) + 0.5, 2.3 * max(1, len(doses)) + 0.6)
    axes = np.array(figure.subplots(max(1, len(doses)), max(1, len(arms)), squeeze=False))
    for i, dose in enumerate(doses):
        for j, arm in enumerate(arms):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            image = images.get((dose, arm))
            if image is None:
                ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(image, cmap="gray", interpolation="nearest")
            if i == 0:
                ax.set_title(textwrap.fill(arm, 30), fontsize=7)  # long condition labels
            if j == 0:
                ax.set_ylabel(f"dose {format_dose(dose)}", fontsize=8)
    figure.suptitle(title or "reconstructed amplitude (rows: dose, columns: arm)", fontsize=10)
    return figure


def mismatch_figure(doses: Sequence[float], curves: Mapping[str, Sequence[float]],
                    noise: float, title: str = "") -> Figure:
    """Excess χ² per pattern of a model against data it did not make, versus dose (log-log):
    one line per ``curves`` label, and the pattern's own noise χ² (``noise``, its pixel
    count) as a dashed line: where a curve crosses it the model, not the photons, limits a
    fit."""
    figure = _figure(6.0, 4.2)
    axes = figure.subplots()
    for label, values in curves.items():
        axes.plot(doses, values, "-o", markersize=3, label=label)
    axes.axhline(noise, color="black", linestyle="--", linewidth=1,
                 label=f"noise χ² of a pattern ({noise:g} pixels)")
    axes.set(xscale="log", yscale="log", xlabel="dose (photons per pattern)",
             ylabel="excess χ² per pattern")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7)
    axes.set_title(title or "model mismatch", fontsize=10)
    return figure


def bias_variance_figure(table: pd.DataFrame, title: str = "") -> Figure:
    """Bias² (solid) and variance (dashed) of amplitude and phase against dose (log-log), one
    colour per arm: where a prior trades noise for bias, the lines cross."""
    figure = _figure(10.0, 4.0)
    axes = figure.subplots(1, 2)
    arms = sorted(table["arm"].unique())
    for ax, part, label in ((axes[0], "amp", "amplitude"), (axes[1], "phase", "phase (rad²)")):
        for i, arm in enumerate(arms):
            rows = table[table["arm"] == arm].sort_values("dose")
            colour = f"C{i % 10}"
            ax.plot(rows["dose"], rows[f"{part}_bias2"].clip(lower=1e-12), "-o", color=colour,
                    markersize=3, label=f"{arm} bias²")
            ax.plot(rows["dose"], rows[f"{part}_variance"], "--s", color=colour, markersize=3,
                    label=f"{arm} variance")
        ax.set(xscale="log", yscale="log", xlabel="dose (photons per pattern)",
               ylabel=f"{label}: bias² and variance")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=6)
    figure.suptitle(f"{title or 'bias and variance'}: over noise seeds (solid: bias², dashed: "
                    "variance)", fontsize=10)
    return figure

"""The Cramér–Rao limit of a simulated experiment (docs/physics.md §11, which states the method and
its assumptions: probe and positions known, Poisson counts only, unbiased estimators, first-order
alignment).

The Fisher information of the object's real and imaginary parts
(:func:`ptycho.physics.poisson_fisher`) is linear in the dose scale ``s²``: it is computed once
per scan at ``s² = 1`` and divided by each dose's ``s²``. Parameters are the pixels lit by at least
``free_threshold`` of the peak illumination (the rest are known, which can only lower a bound).
A global phase is the gauge: the bound is taken on its complement. The bound on the scored MSE is
``tr(L T I⁺ Tᵀ Lᵀ)/n``, ``L`` the alignments linearised and ``T`` the maps from real/imaginary
errors to amplitude or phase errors, evaluated ``dense`` (up to :data:`DENSE_LIMIT` parameters,
exact) or ``cg`` (Hutchinson's estimator, each ``I⁺h`` by conjugate gradients, with its standard
error); either gives the bound per pixel too (:attr:`LimitEstimate.maps`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ptycho.physics import Ptychography, poisson_fisher

__all__ = [
    "DENSE_LIMIT", "LimitEstimate", "alignment_maps", "estimate_limit", "fisher_matrix", "fluence",
    "free_pixels", "limit_cache_key", "load_or_estimate_limit"
]

log = logging.getLogger(__name__)

DENSE_LIMIT = 4096
"""Up to this many real parameters (twice the free pixels) the bound is computed densely."""
MIN_PROBES = 4
"""Hutchinson probes per part at least (``cg``)."""
ROUND_PROBES = 2
"""Hutchinson probes added per part and round after the first :data:`MIN_PROBES`."""
LIMIT_VERSION = 3
"""Bumped when what :func:`estimate_limit` computes changes (invalidates cached limits)."""


@dataclass(frozen=True)
class LimitEstimate:
    """The Cramér–Rao bound on the scored MSEs of one scan at dose scale ``s² = 1``.

    Divide by a dataset's ``s²`` (:meth:`ptycho.physics.Ptychography.dose_scale`) for its
    dose: :meth:`at_scale`.
    """

    amp_mse: float
    """Bound on ``amp_mse`` (amplitude units²) at ``s² = 1``."""
    phase_mse: float
    """Bound on ``phase_mse`` (rad²) at ``s² = 1``."""
    amp_mse_stderr: float
    """Standard error of the estimate (0 for ``dense``)."""
    phase_mse_stderr: float
    method: str
    """``dense`` or ``cg``."""
    samples: int
    """Hutchinson probes used for the part that needed most (0 for ``dense``)."""
    free_pixels: int
    region_pixels: int
    cg_iterations: int
    """Largest number of CG iterations one solve took (0 for ``dense``)."""
    seconds: float
    maps: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    """Per-pixel bounds at ``s² = 1``, each ``(h, w)`` float64 over the scored region:
    ``amp_variance`` (amplitude units²) and ``phase_variance`` (rad²), the diagonal of the
    aligned error's bound covariance, whose mean over the region is ``amp_mse``/``phase_mse``;
    ``amp_variance_stderr``/``phase_variance_stderr``, each pixel's standard error (0 for
    ``dense``; Hutchinson's diagonal estimator for ``cg``)."""

    def at_scale(self, scale: float) -> dict[str, float]:
        """``amp_mse_crb``, ``phase_mse_crb`` and their standard errors at dose scale ``s²``."""
        return {"amp_mse_crb": self.amp_mse / scale, "phase_mse_crb": self.phase_mse / scale,
                "amp_mse_crb_stderr": self.amp_mse_stderr / scale,
                "phase_mse_crb_stderr": self.phase_mse_stderr / scale}

    def maps_at_scale(self, scale: float) -> dict[str, np.ndarray]:
        """:attr:`maps` at dose scale ``s²`` (each divided by it), as float32."""
        return {name: (values / scale).astype(np.float32) for name, values in self.maps.items()}


def fluence(operator: Ptychography, scale: float, region: tuple[slice, slice]) -> dict[str, float]:
    """The dose on the sample: photons incident per object pixel² over the scored region.

    Photons per pattern at a fixed scan step is not the sample's dose: a denser scan puts more
    photons on each pixel. The incident photons of pattern ``j`` are ``s²|P(r − r_j)|²`` per
    pixel (before the object), so the fluence map is ``s² Σ_j |P(r − r_j)|²``.

    Args:
        operator: the scan's operator (probe, positions, object grid).
        scale: the scan's dose scale ``s²`` (:meth:`Ptychography.dose_scale`), times
            ``measured / expected`` photons for the fluence at the measured counts.
        region: ``(rows, cols)`` slices of the scored region.

    Returns:
        ``fluence`` (the mean over the region) and ``fluence_p5`` (its 5th percentile: the
        least-exposed part), photons per pixel².
    """
    rows, cols = region
    exposure = scale * operator.illumination()[rows, cols]
    return {"fluence": float(exposure.mean()), "fluence_p5": float(np.percentile(exposure, 5))}


def free_pixels(operator: Ptychography, *, threshold: float = 1e-3) -> np.ndarray:
    """``(H, W)`` bool: pixels lit by at least ``threshold`` of the peak illumination (the
    parameters of the bound; the others are treated as known)."""
    lit = operator.illumination()
    return lit >= threshold * lit.max()


def fisher_matrix(operator: Ptychography, obj: np.ndarray, free: np.ndarray, *,
                  batch: int = 32, weights: np.ndarray | None = None) -> np.ndarray:
    """The dense ``(2n, 2n)`` float64 Fisher matrix at ``s² = 1`` over the ``n`` free pixels,
    parameters ordered ``(Re δ_1..n, Im δ_1..n)``; built column by column from
    :func:`~ptycho.physics.poisson_fisher` (for small problems: ``2n`` applications, ``batch``
    at a time); ``weights``: the detector's (:func:`~ptycho.physics.poisson_fisher`)."""
    apply = poisson_fisher(operator, obj, free, weights)
    count = int(np.count_nonzero(free))
    matrix = np.empty((2 * count, 2 * count))
    basis = np.concatenate([np.eye(count), 1j * np.eye(count)])  # (2n, n): Re then Im
    for first in range(0, 2 * count, batch):
        out = apply(basis[first:first + batch])
        matrix[:, first:first + batch] = np.concatenate([out.real, out.imag], axis=1).T
    return 0.5 * (matrix + matrix.T)  # symmetric up to float32 round-off


def alignment_maps(amplitude: np.ndarray, phase_alignment: str) -> tuple[
        Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """The pipeline's alignments, linearised, as adjoint maps ``Lᵀ`` on region errors.

    Returns ``(amplitude Lᵀ, phase Lᵀ)`` acting on ``(n,)`` vectors over the region pixels
    (row-major). Amplitude: ``L = I − u 1ᵀ/n`` with ``u = a/mean(a)`` (the global-scale match of
    :func:`~ptycho.evaluation.alignment.align_amplitude`). Phase: the projection off the constant
    (``mean``), off the least-squares plane (``plane``) or the identity (``none``).
    """
    truth = np.asarray(amplitude, np.float64)
    ratio = (truth / truth.mean()).ravel()
    count = ratio.size

    def amplitude_adjoint(z: np.ndarray) -> np.ndarray:
        return z - np.ones(count) * (ratio @ z) / count

    if phase_alignment == "none":
        return amplitude_adjoint, lambda z: np.asarray(z, np.float64)
    rows, cols = np.indices(truth.shape, dtype=np.float64)
    design = np.ones((count, 1)) if phase_alignment == "mean" else np.stack(
        [np.ones(count), rows.ravel(), cols.ravel()], axis=1)
    basis, _ = np.linalg.qr(design)

    def phase_adjoint(z: np.ndarray) -> np.ndarray:
        return z - basis @ (basis.T @ z)

    return amplitude_adjoint, phase_adjoint


def _amplitude_forward(amplitude: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``L`` of the amplitude alignment (the transpose of :func:`alignment_maps`' first map):
    ``w ↦ w − u·mean(w)`` with ``u = a/mean(a)``, on ``(n,)`` region vectors."""
    ratio = (np.asarray(amplitude, np.float64) / np.mean(amplitude)).ravel()
    return lambda w: w - ratio * np.mean(w)


def _relative_stderr(values: list[float]) -> float:
    """Standard error of the mean over the mean (infinite for fewer than two values)."""
    if len(values) < 2 or np.mean(values) == 0:
        return float("inf")
    return float(np.std(values, ddof=1) / np.sqrt(len(values)) / abs(np.mean(values)))


def _block_cg(apply: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray,
              precondition: np.ndarray, *, tolerance: float,
              max_iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Preconditioned conjugate gradients for ``apply(x) = rhs`` on a batch of right-hand sides
    ``(B, n)`` at once (each column its own recurrence; one batched product per iteration), in
    the real inner product of complex vectors. Written here because the operator is
    complex-carried but real-symmetric, which scipy's solvers (complex-Hermitian, one vector)
    do not express. Returns ``(x (B, n), iterations (B,))``: a column stops moving once its
    relative residual is below ``tolerance``."""

    def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum((np.conj(a) * b).real, axis=1)

    x = np.zeros_like(rhs)
    residual = rhs.copy()
    z = residual / precondition
    direction = z.copy()
    rz = dot(residual, z)
    target = tolerance * np.linalg.norm(rhs, axis=1)
    iterations = np.zeros(len(rhs), int)
    active = np.linalg.norm(residual, axis=1) > target
    for _ in range(max_iterations):
        if not active.any():
            break
        # The whole batch each time, converged columns included: one shape, one compilation.
        image = apply(direction)
        step = np.where(active, rz / np.where(active, dot(direction, image), 1.0), 0.0)
        x += step[:, None] * direction
        residual -= step[:, None] * image
        iterations[active] += 1
        active &= np.linalg.norm(residual, axis=1) > target
        z = residual / precondition
        rz_next = dot(residual, z)
        ratio = np.where(rz > 0, rz_next / np.where(rz > 0, rz, 1.0), 0.0)
        direction = z + ratio[:, None] * direction
        rz = rz_next
    if active.any():
        log.warning("limit: CG stopped at %d iterations (relative residual %.2g)", max_iterations,
                    float(np.max(np.linalg.norm(residual[active], axis=1)
                                 / np.maximum(np.linalg.norm(rhs[active], axis=1), 1e-300))))
    return x, iterations


def estimate_limit(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                   region: tuple[slice, slice], *, phase_alignment: str = "plane",
                   samples: int = 16, target_stderr: float = 0.01, seed: int = 0,
                   free_threshold: float = 1e-3, method: str = "auto", tolerance: float = 1e-2,
                   max_iterations: int = 2000,
                   weights: np.ndarray | None = None) -> LimitEstimate:
    """The Cramér–Rao bound on the pipeline's ``amp_mse`` and ``phase_mse`` at ``s² = 1``.

    Args:
        obj: ``(H, W)`` complex true object.
        probe: ``(N, N)`` complex probe.
        positions: ``(M, 2)`` float ``(x, y)`` of the scored scan.
        region: ``(rows, cols)`` slices of the scored region (the evaluation's).
        phase_alignment: as ``eval.phase_alignment``.
        samples: Hutchinson probes per part at most (``cg`` only).
        target_stderr: stop probing once the relative standard error is below this (after
            :data:`MIN_PROBES`); a large region averages so many pixels per probe that a few do.
        seed: seed of the probes.
        free_threshold: illumination fraction below which pixels count as known.
        method: ``dense``, ``cg`` or ``auto`` (dense up to :data:`DENSE_LIMIT` parameters).
        tolerance: CG relative residual. 1e-2 moves the estimate by about 1e-4 of itself
            against 1e-4 (measured on the quickstart's and an N=128 scan), far below the
            probes' 1% standard error, in a third of the iterations.
        max_iterations: CG iterations per solve at most.
        weights: the detector's share of each pixel's information (``(N, N)`` or
            ``(M, N, N)``, :func:`~ptycho.physics.poisson_fisher`); ``None``: an ideal detector.
            Under a background they depend on the dose: the bound is then for one ``s²``.
    """
    start = time.perf_counter()
    obj = np.asarray(obj, np.complex128)
    operator = Ptychography(probe, positions, obj.shape)
    lit = operator.illumination()  # once: the free pixels and the preconditioner
    free = lit >= free_threshold * lit.max()  # as free_pixels
    rows, cols = region
    in_region = np.zeros(obj.shape, bool)
    in_region[rows, cols] = True
    scored = in_region & free  # a region pixel that is not free is known: zero variance
    order = np.full(obj.shape, -1)
    order[free] = np.arange(int(free.sum()))
    region_index = order[rows, cols].ravel()  # -1: known pixel
    count, region_count = int(free.sum()), int(in_region.sum())
    if not scored.any():
        raise ValueError("limit: no pixel of the scored region is illuminated")
    truth = obj[rows, cols].ravel()
    amp_adjoint, phase_adjoint = alignment_maps(np.abs(obj[rows, cols]), phase_alignment)
    amp_dir = truth / np.abs(truth)  # δ ↦ Re(conj(amp_dir) δ) is the amplitude error
    phase_dir = 1j * truth / np.abs(truth) ** 2
    gauge = np.where(free, 1j * obj, 0)[free]
    gauge /= np.linalg.norm(gauge)

    def representer(weights: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Complex free-pixel vector ``h`` with ``Re(vdot(h, δ)) = Σ_p weights_p T_p(δ)``."""
        h = np.zeros(count, np.complex128)
        known = region_index < 0
        np.add.at(h, region_index[~known], (weights * direction)[~known])
        return h - gauge * np.vdot(gauge, h).real  # off the gauge

    apply = poisson_fisher(operator, obj, free, weights)
    diagonal = 2.0 * lit[free]
    shift = float(np.median(diagonal))  # μ: the gauge direction's stand-in eigenvalue

    def regularised(x: np.ndarray) -> np.ndarray:
        """The information plus ``μ`` along the gauge, on a batch ``(B, n)``."""
        along = np.sum((np.conj(gauge) * x).real, axis=-1, keepdims=True)
        return apply(x) + shift * gauge * along

    use_dense = method == "dense" or (method == "auto" and 2 * count <= DENSE_LIMIT)
    if method not in ("auto", "dense", "cg"):
        raise ValueError(f"limit method must be auto, dense or cg, got {method!r}")
    results: dict[str, tuple[float, float]] = {}
    maps: dict[str, np.ndarray] = {}
    shape = obj[rows, cols].shape
    lit_index = np.flatnonzero(region_index >= 0)  # region pixels that are parameters
    worst = used = 0
    if use_dense:
        matrix = fisher_matrix(operator, obj, free, weights=weights)
        real_gauge = np.concatenate([gauge.real, gauge.imag])
        inverse = np.linalg.inv(matrix + shift * np.outer(real_gauge, real_gauge))
        for part, adjoint, direction in (("amp", amp_adjoint, amp_dir),
                                         ("phase", phase_adjoint, phase_dir)):
            columns = np.stack([representer(adjoint(e), direction)
                                for e in np.eye(region_count)], axis=1)
            real = np.concatenate([columns.real, columns.imag])
            diagonal_bound = np.einsum("ij,ij->j", real, inverse @ real)  # per region pixel
            results[part] = (float(diagonal_bound.sum()) / region_count, 0.0)
            maps[f"{part}_variance"] = diagonal_bound.reshape(shape)
            maps[f"{part}_variance_stderr"] = np.zeros(shape)
    else:
        rng = np.random.default_rng(seed)
        parts = {"amp": (amp_adjoint, _amplitude_forward(np.abs(obj[rows, cols])), amp_dir),
                 "phase": (phase_adjoint, phase_adjoint, phase_dir)}  # a projection: Lᵀ = L
        values: dict[str, list[float]] = {part: [] for part in parts}
        diagonals: dict[str, list[np.ndarray]] = {part: [] for part in parts}
        while True:
            # Probes in rounds, both parts' in one batched solve: MIN_PROBES each first, then
            # ROUND_PROBES more for a part whose standard error is still above the target.
            batch: list[tuple[str, np.ndarray, np.ndarray]] = []
            for part, (adjoint, _, direction) in parts.items():
                done = values[part]
                if len(done) >= samples or (len(done) >= MIN_PROBES
                                            and _relative_stderr(done) < target_stderr):
                    continue
                for _ in range(min(ROUND_PROBES if done else MIN_PROBES, samples - len(done))):
                    z = rng.choice([-1.0, 1.0], region_count)
                    batch.append((part, z, representer(adjoint(z), direction)))
            if not batch:
                break
            solutions, iterations = _block_cg(
                regularised, np.stack([h for _, _, h in batch]),
                diagonal + 1e-12 * diagonal.max(), tolerance=tolerance,
                max_iterations=max_iterations)
            worst = max(worst, int(iterations.max()))
            for (part, z, h), x, count_cg in zip(batch, solutions, iterations, strict=True):
                _, forward, direction = parts[part]
                # Hutchinson's diagonal (Bekas, Kokiopoulou & Saad 2007): z ⊙ (L T I⁺ Tᵀ Lᵀ z);
                # its mean over the region is exactly this probe's trace sample below
                x = x - gauge * np.vdot(gauge, x).real
                scored_error = np.zeros(region_count)
                scored_error[lit_index] = (np.conj(direction[lit_index])
                                           * x[region_index[lit_index]]).real
                diagonals[part].append(z * forward(scored_error))
                values[part].append(float(np.vdot(h, x).real) / region_count)
                log.info("limit: %s probe %d (at most %d): %.4g (%d CG iterations)", part,
                         len(values[part]), samples, values[part][-1], count_cg)
        for part in parts:
            done = values[part]
            used = max(used, len(done))
            results[part] = (float(np.mean(done)),
                             float(np.std(done, ddof=1) / np.sqrt(len(done)))
                             if len(done) > 1 else float("nan"))
            stack = np.array(diagonals[part])
            maps[f"{part}_variance"] = stack.mean(axis=0).reshape(shape)
            maps[f"{part}_variance_stderr"] = (
                stack.std(axis=0, ddof=1) / np.sqrt(len(stack)) if len(stack) > 1
                else np.full(region_count, np.nan)).reshape(shape)
    return LimitEstimate(
        amp_mse=results["amp"][0], phase_mse=results["phase"][0],
        amp_mse_stderr=results["amp"][1], phase_mse_stderr=results["phase"][1],
        method="dense" if use_dense else "cg", samples=0 if use_dense else used,
        free_pixels=count, region_pixels=region_count, cg_iterations=worst,
        seconds=time.perf_counter() - start, maps=maps,
    )


def limit_cache_key(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                    region: tuple[slice, slice], **settings: object) -> str:
    """sha256 (hex, 24 chars) of everything :func:`estimate_limit` depends on (the detector's
    ``weights`` by content; without them the key is what it was before they existed)."""
    digest = hashlib.sha256()
    weights = settings.pop("weights", None)
    for array in (obj, probe, positions) + (() if weights is None else (weights,)):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    rows, cols = region
    digest.update(json.dumps({"region": [rows.start, rows.stop, cols.start, cols.stop],
                              "version": LIMIT_VERSION, **settings},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def load_or_estimate_limit(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                           region: tuple[slice, slice], cache_dir: str | Path | None,
                           **settings) -> tuple[LimitEstimate, bool]:
    """:func:`estimate_limit`, reused from ``cache_dir/limits/<key>.json`` when there (it does
    not depend on the dose, so a dose sweep computes it once). Returns ``(limit, cache_hit)``."""
    path = None
    if cache_dir is not None:
        key = limit_cache_key(obj, probe, positions, region, **settings)
        path = Path(cache_dir) / "limits" / f"{key}.json"
        if path.is_file() and path.with_suffix(".npz").is_file():
            try:
                with np.load(path.with_suffix(".npz")) as stored:
                    maps = {name: stored[name] for name in stored.files}
                return LimitEstimate(**json.loads(path.read_text()), maps=maps), True
            except (OSError, ValueError, TypeError, zipfile.BadZipFile, zlib.error) as error:
                # damaged (e.g. a writer killed mid-way): compute it again
                log.warning("limit cache entry %s unreadable (%s): recomputing", path, error)
    limit = estimate_limit(obj, probe, positions, region, **settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scalars = {f.name: getattr(limit, f.name) for f in fields(limit) if f.name != "maps"}
        # The maps first (the json marks the entry complete), each through a temporary file of
        # this process's own: parallel jobs of one scan compute the same entry at once, and a
        # shared temporary name would let one rename the other's half-written file.
        unique = f".{os.getpid()}.{threading.get_ident()}.part"
        partial = path.with_suffix(unique + ".npz")
        np.savez_compressed(partial, **limit.maps)
        partial.replace(path.with_suffix(".npz"))
        partial = path.with_suffix(unique)
        partial.write_text(json.dumps(scalars, indent=2))
        partial.replace(path)
    return limit, False

"""Iterative reconstruction by pty-chi (LSQML with a Poisson noise model, ePIE) of one dataset,
with our conventions mapped in :mod:`ptycho.iterative.conventions`.

pty-chi and torch are optional (the ``[iterative]`` extra) and imported only when an iterative
reconstruction runs (:func:`load_ptychi`). We use pty-chi's engines as they are; this module only
maps inputs, runs the iterations one at a time so the data error can be logged per iteration,
and maps the result back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ptycho.config import Device, ModelConfig, ModelKind
from ptycho.iterative.conventions import (
    POSITION_ORIGIN,
    flat_field_scale,
    ptychi_positions,
    ptychi_probe,
)

__all__ = ["IterationHook", "IterativeResult", "IterativeUnavailable", "forward_counts",
           "initial_object", "load_ptychi", "reconstruct_iteratively", "torch_device"]

log = logging.getLogger(__name__)

IterationHook = Callable[[int, dict[str, float]], None]
"""Called after each iteration with its 1-based number and ``{"nll_per_photon": …}``."""


class IterativeUnavailable(RuntimeError):
    """pty-chi (or torch) is not installed: ``pip install -e '.[iterative]'``."""


@dataclass(frozen=True, eq=False)
class IterativeResult:
    """What an iterative reconstruction produced.

    Attributes:
        obj: ``(H, W)`` complex64 reconstructed object on the grid of the input scan.
        history: per iteration, ``nll_per_photon`` (nats per photon, the full Poisson NLL of
            the counts given the reconstruction's expected counts).
        iterations_run: iterations done (fewer than asked when ``tolerance`` stopped them).
        time_s: wall time of the iterations, seconds (without the per-iteration data error).
        device: where torch ran (``cpu``, ``cuda``).
        expected: ``(M, N, N)`` float32 expected counts of the final reconstruction, DC at
            ``(N/2, N/2)``, photons per pixel.
    """

    obj: np.ndarray
    history: dict[str, list[float]] = field(default_factory=dict)
    iterations_run: int = 0
    time_s: float = 0.0
    device: str = "cpu"
    expected: np.ndarray | None = None


def load_ptychi() -> tuple[ModuleType, type]:
    """``(ptychi.api, PtychographyTask)``, imported on first use.

    Raises:
        IterativeUnavailable: pty-chi or torch is not installed.
    """
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        # torch's CUDA wheels bring Triton, whose LLVM crashes the process (SIGSEGV) when it loads
        # after TensorFlow's (measured: `import tensorflow, triton` segfaults with torch 2.14.1,
        # triton 3.8.0, tensorflow 2.21). With TensorFlow already in the process, tell torch
        # that Triton is absent: torch and pty-chi then use their plain PyTorch kernels.
        sys.modules["triton"] = None  # type: ignore[assignment]
    try:
        import ptychi.api as api
        from ptychi.api.task import PtychographyTask
    except ImportError as error:
        raise IterativeUnavailable(
            f"the iterative arms need pty-chi and torch ({error}); install them with "
            "pip install -e '.[iterative]' (make does)"
        ) from error
    return api, PtychographyTask


class _DropPtychiNotices(logging.Filter):
    """pty-chi also logs on the root logger: its INFO lines (defaults it filled in), and a
    warning that patches at the scan's edge reach one pixel past the object buffer and get zero
    padding, which our valid scan range makes harmless. Other warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}ptychi{os.sep}" not in record.pathname:
            return True
        return (record.levelno >= logging.WARNING
                and "probe-grid object tensor" not in record.getMessage())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence notices of torch and pty-chi that say nothing about our data: CUDA probing on a
    machine without a driver, a scalar read of a tensor that requires grad, edge padding."""
    notice = _DropPtychiNotices()
    root = logging.getLogger()
    root.addFilter(notice)
    # pty-chi's own INFO lines and its tqdm bar (shown at INFO) would interleave with the job's
    # log; reconstruct_iteratively logs the progress itself.
    ptychi_logger = logging.getLogger("ptychi")
    level = ptychi_logger.level
    ptychi_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="CUDA initialization")
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
            yield
    finally:
        root.removeFilter(notice)
        ptychi_logger.setLevel(level)


def torch_device(device: Device | str) -> str:
    """``cpu`` or ``cuda`` for a ``model.device`` setting (``auto``: CUDA when torch sees it)."""
    import torch

    device = Device(device)
    if device == Device.cpu:
        return "cpu"
    with _quiet():
        available = torch.cuda.is_available()
    if device == Device.gpu and not available:
        raise ValueError("model.device='gpu' but torch sees no CUDA device")
    return "cuda" if available else "cpu"


def _task(api: ModuleType, task_class: type, kind: ModelKind, settings: ModelConfig, *,
          counts: np.ndarray, positions: np.ndarray, probe: np.ndarray,
          initial_object: np.ndarray, device: str, seed: int) -> Any:
    """A pty-chi task for one reconstruction (its defaults unless set here), mapped to our
    conventions (:mod:`.conventions`)."""
    if kind == ModelKind.lsqml:
        options = api.LSQMLOptions()
        options.reconstructor_options.noise_model = api.NoiseModels.POISSON
        # The probe's photon scale is known (conventions.flat_field_scale): keep it.
        options.reconstructor_options.rescale_probe_intensity_in_first_epoch = False
        options.object_options.optimal_step_size_scaler = 0.9 * settings.step_size
    elif kind == ModelKind.epie:
        options = api.EPIEOptions()
        options.object_options.alpha = settings.alpha
        options.object_options.step_size = settings.step_size
        options.probe_options.alpha = settings.alpha
    else:
        raise ValueError(f"not an iterative model: {kind!r}")
    options.data_options.fft_shift = True  # ours: DC at (N/2, N/2); pty-chi's: at (0, 0)
    options.object_options.optimizable = True
    options.object_options.pixel_size_m = 1.0
    options.object_options.determine_position_origin_coords_by = (
        api.ObjectPosOriginCoordsMethods.SPECIFIED)
    options.object_options.position_origin_coords = POSITION_ORIGIN
    options.probe_options.optimizable = settings.probe_update
    options.probe_position_options.optimizable = settings.position_correction
    options.reconstructor_options.num_epochs = settings.iterations
    options.reconstructor_options.batch_size = min(settings.batch_size, len(counts))
    options.reconstructor_options.default_device = (
        api.Devices.GPU if device == "cuda" else api.Devices.CPU)
    options.reconstructor_options.random_seed = seed
    # Reproducible numbers for a config (ptycho's rule), at some cost in speed on a GPU.
    options.reconstructor_options.allow_nondeterministic_algorithms = False
    position_y, position_x = ptychi_positions(positions)
    return task_class(options, diffraction_data=counts, object_data=initial_object[None],
                      probe_data=probe, probe_position_x_px=position_x,
                      probe_position_y_px=position_y)


def initial_object(shape: tuple[int, int], noise: float, seed: int) -> np.ndarray:
    """``(H, W)`` complex64 start: ``1 + 0j`` plus seeded complex Gaussian noise of std
    ``noise``."""
    start = np.ones(shape, np.complex128)
    if noise > 0:
        rng = np.random.default_rng(seed)
        start += noise * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return start.astype(np.complex64)


def _expected_counts(task: Any, n_patterns: int, batch: int = 256) -> np.ndarray:
    """The reconstruction's expected counts ``(M, N, N)`` float32, DC at ``(N/2, N/2)``."""
    import torch

    parts = []
    with torch.no_grad():
        for first in range(0, n_patterns, batch):
            indices = torch.arange(first, min(first + batch, n_patterns))
            parts.append(task.reconstructor.forward_model(indices).detach().cpu().numpy())
    return np.fft.fftshift(np.concatenate(parts), axes=(-2, -1)).astype(np.float32)


def forward_counts(
    obj: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """pty-chi's own forward model on our inputs, mapped by :mod:`.conventions`: the expected
    counts and the object patches it extracts, for checking the mapping against ours.

    Args:
        obj: ``(H, W)`` complex object.
        positions: ``(M, 2)`` float ``(x, y)`` patch centres, object pixels (ours).
        probe: ``(N, N)`` complex probe (ours).
        scale: photon scale ``s`` (counts ``λ = s² |F|²``).

    Returns:
        ``(expected (M, N, N) float32 with DC at (N/2, N/2), patches (M, N, N) complex64)``.
    """
    api, PtychographyTask = load_ptychi()
    import torch

    probe = np.asarray(probe)
    M, N = len(positions), probe.shape[0]
    settings = ModelConfig(kind=ModelKind.epie, iterations=1, batch_size=max(1, M),
                           device=Device.cpu)
    with _quiet(), torch.no_grad(), _task(
        api, PtychographyTask, ModelKind.epie, settings, counts=np.ones((M, N, N), np.float32),
        positions=positions, probe=ptychi_probe(probe, scale),
        initial_object=np.asarray(obj, np.complex64), device="cpu", seed=0,
    ) as task:
        intensities, patches = task.reconstructor.forward_model(
            torch.arange(M), return_object_patches=True)
        expected = np.fft.fftshift(intensities.detach().cpu().numpy(), axes=(-2, -1))
        patches = patches.detach().cpu().numpy()
    return expected.astype(np.float32), patches.reshape(M, N, N).astype(np.complex64)


def reconstruct_iteratively(
    kind: ModelKind | str,
    counts: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray,
    object_shape: tuple[int, int],
    dose: float,
    *,
    settings: ModelConfig,
    seed: int,
    on_iteration: IterationHook | None = None,
) -> IterativeResult:
    """Reconstruct the object from measured counts with pty-chi.

    Args:
        kind: ``lsqml`` or ``epie``.
        counts: ``(M, N, N)`` float32 photon counts, DC at ``(N/2, N/2)``.
        positions: ``(M, 2)`` float ``(x, y)`` patch centres, object pixels.
        probe: ``(N, N)`` complex64 probe (our units, docs/physics.md §4.2); known unless
            ``settings.probe_update``.
        object_shape: ``(H, W)`` of the object grid the positions refer to.
        dose: measured photons per pattern (sets the probe's photon scale).
        settings: the ``model`` section (iterations, tolerance, batch size, steps, …).
        seed: torch's, NumPy's and the initial object's seed.
        on_iteration: called after each iteration (e.g. to log the data error).

    Raises:
        IterativeUnavailable: pty-chi is not installed.
        ValueError: bad shapes, or a GPU asked for where there is none.
    """
    kind = ModelKind(kind)
    counts = np.asarray(counts, np.float32)
    if counts.ndim != 3 or counts.shape[1] != counts.shape[2]:
        raise ValueError(f"counts must have shape (M, N, N), got {counts.shape}")
    if np.asarray(positions).shape != (len(counts), 2):
        raise ValueError(f"positions must have shape ({len(counts)}, 2), got "
                         f"{np.asarray(positions).shape}")
    api, PtychographyTask = load_ptychi()
    from ptycho.training import poisson_nll_per_photon  # the PINN's data error, same numbers

    device = torch_device(settings.device)
    scale = flat_field_scale(probe, dose)
    start_object = initial_object(object_shape, settings.object_init_noise, seed)
    history: dict[str, list[float]] = {"nll_per_photon": []}
    elapsed = 0.0
    previous = np.inf
    every = max(1, settings.iterations // 10)  # progress lines: about ten per reconstruction
    with _quiet(), _task(api, PtychographyTask, kind, settings, counts=counts,
                         positions=positions, probe=ptychi_probe(probe, scale),
                         initial_object=start_object, device=device, seed=seed) as task:
        for iteration in range(1, settings.iterations + 1):
            start = time.perf_counter()
            task.run(n_epochs=1)
            elapsed += time.perf_counter() - start
            expected = _expected_counts(task, len(counts))
            value = float(poisson_nll_per_photon(counts, expected))
            history["nll_per_photon"].append(value)
            if on_iteration is not None:
                on_iteration(iteration, {"nll_per_photon": value})
            if iteration % every == 0 or iteration == settings.iterations:
                remaining = elapsed / iteration * (settings.iterations - iteration)
                log.info("%s iteration %d/%d  NLL/photon=%.6g  %.1fs  ETA %.0fs", kind,
                         iteration, settings.iterations, value, elapsed, remaining)
            if not np.isfinite(value):
                raise FloatingPointError(
                    f"{kind} diverged at iteration {iteration}: NLL per photon {value}")
            if settings.tolerance > 0 and abs(previous - value) < settings.tolerance:
                break
            previous = value
        obj = task.get_data_to_cpu("object", as_numpy=True)[0]
    log.info("%s: %d iterations on %d patterns in %.1fs on %s, NLL/photon %.5g", kind,
             len(history["nll_per_photon"]), len(counts), elapsed, device,
             history["nll_per_photon"][-1])
    return IterativeResult(obj=np.asarray(obj, np.complex64), history=history,
                           iterations_run=len(history["nll_per_photon"]), time_s=elapsed,
                           device=device, expected=expected)

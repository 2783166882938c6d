"""pty-chi's engines as arms: what LSQML, ePIE and rPIE share (:mod:`.lsqml`, :mod:`.epie`,
:mod:`.rpie` each add only their own options), and our conventions mapped to pty-chi's.

pty-chi and torch are optional (the ``[iterative]`` extra) and imported only when a
reconstruction runs (:func:`load_ptychi`). We use pty-chi's engines as they are; this module maps
inputs, runs the iterations one at a time so the data error can be logged per iteration, and maps
the result back.

The mapping (docs/physics.md §10.2; ``tests/arms/test_ptychi_conventions.py`` checks it against
pty-chi's own extraction and forward model, pixel by pixel): our ``(x, y)`` patch centres go in
unchanged, per axis, with the origin ``(−½, −½)`` (pty-chi snaps a position to ``round(p) +
origin`` and shifts the probe by the rest; origin ``(0, 0)`` rounds half-integers to even and
moves alternate patches by a pixel); the counts go in with ``fft_shift=True`` (pty-chi's zero
frequency is at ``(0, 0)``, ours at ``(N/2, N/2)``); the probe carries the photon scale,
``P · s / N`` with the flat-field ``s² = dose / Σ|P|²`` (:func:`flat_field_scale`), so pty-chi's
unnormalised ``|FFT2(P · o)|²`` is our ``λ`` in photons. At sub-pixel positions the models differ
in how they shift (ours resamples the object bilinearly, pty-chi shifts the probe by a Fourier
shift).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np

from ptycho import physics
from ptycho.arms.base import ArmInput, ProgressHook, Reconstruction
from ptycho.config import Device, JobConfig
from ptycho.config.arms.base import PtychiSettings

__all__ = [
    "POSITION_ORIGIN", "IterativeUnavailable", "flat_field_scale",
    "initial_object", "load_ptychi", "ptychi_positions", "ptychi_probe", "reconstruct_with_ptychi",
    "torch_device"
]

log = logging.getLogger(__name__)

EngineOptions = Callable[[ModuleType, Any], Any]
"""``(ptychi.api, settings) → pty-chi options`` with the engine's own choices set."""

POSITION_ORIGIN = (-0.5, -0.5)
"""pty-chi's ``position_origin_coords`` (rows, columns) for our positions (module docstring)."""


def ptychi_positions(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Our ``(M, 2)`` ``(x, y)`` patch centres → pty-chi's ``(position_y_px, position_x_px)``.

    Args:
        positions: ``(M, 2)`` float ``(x, y)`` object pixels (docs/physics.md §1.3).

    Returns:
        Two ``(M,)`` float64 arrays, rows then columns, for pty-chi with the origin
        :data:`POSITION_ORIGIN` specified.
    """
    positions = np.asarray(positions, np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must have shape (M, 2) (x, y), got {positions.shape}")
    return positions[:, 1].copy(), positions[:, 0].copy()


def flat_field_scale(probe: np.ndarray, dose: float) -> float:
    """``s`` with ``s² = dose / Σ|P|²``: the photon scale that gives an empty beam (object 1)
    ``dose`` photons per pattern (Parseval: ``Σ|F(P)|² = Σ|P|²``).

    Args:
        probe: ``(N, N)`` complex probe, arbitrary amplitude units.
        dose: photons per pattern, positive.
    """
    energy = float(np.sum(np.abs(np.asarray(probe, np.complex128)) ** 2))
    if not (energy > 0 and np.isfinite(energy)):
        raise ValueError(f"the probe carries no finite energy (Σ|P|² = {energy!r})")
    if not (dose > 0 and np.isfinite(dose)):
        raise ValueError(f"dose must be positive and finite, got {dose!r}")
    return float(np.sqrt(dose / energy))


def ptychi_probe(probe: np.ndarray, scale: float) -> np.ndarray:
    """Our ``(N, N)`` probe and photon scale ``s`` → pty-chi's ``(1, 1, N, N)`` complex64 probe
    ``P · s / N`` (its unnormalised FFT then yields photon counts)."""
    probe = np.asarray(probe)
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(f"probe must have shape (N, N), got {probe.shape}")
    N = probe.shape[0]
    return (probe.astype(np.complex128) * (scale / N)).astype(np.complex64)[None, None]


class IterativeUnavailable(RuntimeError):
    """pty-chi (or torch) is not installed: ``pip install -e '.[iterative]'``."""


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
    # log; reconstruct_with_ptychi logs the progress itself.
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


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch on one CPU thread within the block, then as it was. pty-chi's CPU updates are not
    reproducible on two threads (LSQML-TV at the quickstart's 1e4, seed 0, twice: amplitude
    FRC50 0.692 and 0.687, the same 18 iterations chosen) and are on one, where this VM also runs
    them faster (9.3-10.0 s against 11.1-11.3 s per job): ptycho's rule is the same numbers for a
    config. A GPU's kernels are not affected."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


def initial_object(shape: tuple[int, int], noise: float, seed: int) -> np.ndarray:
    """``(H, W)`` complex64 start: ``1 + 0j`` plus seeded complex Gaussian noise of std
    ``noise``."""
    start = np.ones(shape, np.complex128)
    if noise > 0:
        rng = np.random.default_rng(seed)
        start += noise * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return start.astype(np.complex64)


def _expected_counts(task: Any, n_patterns: int, detector: physics.Detector,
                     batch: int = 256) -> np.ndarray:
    """The reconstruction's expected counts ``(M, N, N)`` float32, DC at ``(N/2, N/2)``, as the
    ``detector`` measures them (masked, the background added)."""
    import torch

    parts = []
    with torch.no_grad():
        for first in range(0, n_patterns, batch):
            indices = torch.arange(first, min(first + batch, n_patterns))
            parts.append(task.reconstructor.forward_model(indices).detach().cpu().numpy())
    expected = np.fft.fftshift(np.concatenate(parts), axes=(-2, -1)).astype(np.float32)
    return detector.expected(expected).numpy()




def _task(api: ModuleType, task_class: type, options: Any, settings: PtychiSettings, *,
          counts: np.ndarray, positions: np.ndarray, probe: np.ndarray,
          initial_object: np.ndarray, device: str, seed: int,
          detector: physics.Detector | None = None) -> Any:
    """A pty-chi task for one reconstruction with ``options`` (the engine's own choices already
    set, pty-chi's defaults otherwise), mapped to our conventions. pty-chi has no background
    model: it is given the counts less the known background (clipped at 0), and the detector's
    mask as its ``valid_pixel_mask``."""
    options.data_options.fft_shift = True  # ours: DC at (N/2, N/2); pty-chi's: at (0, 0)
    options.object_options.optimizable = True
    options.object_options.pixel_size_m = 1.0
    options.object_options.determine_position_origin_coords_by = (
        api.ObjectPosOriginCoordsMethods.SPECIFIED)
    options.object_options.position_origin_coords = POSITION_ORIGIN
    options.probe_options.optimizable = settings.probe_update
    options.probe_position_options.optimizable = settings.position_correction
    options.probe_position_options.step_size = settings.position_step_size
    options.probe_position_options.correction_options.update_magnitude_limit = (
        settings.position_update_limit)
    options.reconstructor_options.num_epochs = settings.iterations
    options.reconstructor_options.batch_size = min(settings.batch_size, len(counts))
    options.reconstructor_options.default_device = (
        api.Devices.GPU if device == "cuda" else api.Devices.CPU)
    options.reconstructor_options.random_seed = seed
    # Reproducible numbers for a config (ptycho's rule), at some cost in speed on a GPU.
    options.reconstructor_options.allow_nondeterministic_algorithms = False
    position_y, position_x = ptychi_positions(positions)
    detector = detector or physics.Detector()
    masked = {} if detector.mask is None else {"valid_pixel_mask": detector.mask}
    return task_class(options, diffraction_data=detector.signal(counts),
                      object_data=initial_object[None], probe_data=probe,
                      probe_position_x_px=position_x, probe_position_y_px=position_y, **masked)


def reconstruct_with_ptychi(engine_options: EngineOptions, data: ArmInput, job: JobConfig,
                            on_progress: ProgressHook | None) -> Reconstruction:
    """Reconstruct ``data.scored`` with one of pty-chi's engines, from a flat start (or seeded
    noise), with the scan's probe and positions, at its measured dose; ``job.model`` is the
    engine's :class:`~ptycho.config.arms.base.PtychiSettings`. With ``stopping=heldout`` the
    iteration count is chosen first on held-out patterns (:func:`_choose_iterations`).

    Raises:
        IterativeUnavailable: pty-chi is not installed.
        ValueError: a GPU asked for where there is none.
        FloatingPointError: the data error became non-finite.
    """
    api, task_class = load_ptychi()
    with single_threaded_torch():
        return _reconstruct(api, task_class, engine_options, data, job, on_progress)


def _reconstruct(api: ModuleType, task_class: type, engine_options: EngineOptions,
                 data: ArmInput, job: JobConfig, on_progress: ProgressHook | None
                 ) -> Reconstruction:
    settings, scan = job.model, data.scored
    device = torch_device(settings.device)
    engine = _Engine(api, task_class, engine_options, settings, device, job.seed,
                     flat_field_scale(scan.probe, scan.signal_dose), scan.object_shape,
                     scan.detector)
    history: dict[str, list[float]] = {"nll_per_photon": []}
    metrics: dict[str, float] = {}
    iterations = settings.iterations
    if str(settings.stopping) == "heldout":
        iterations, curve, metrics = _choose_iterations(engine, scan, on_progress)
        history["heldout_nll_per_photon"] = curve
    elapsed, previous = 0.0, np.inf
    every = max(1, iterations // 10)  # progress lines: about ten per reconstruction
    with _quiet(), engine.task(scan.counts, scan.positions, scan.probe) as task:
        for iteration in range(1, iterations + 1):
            start = time.perf_counter()
            task.run(n_epochs=1)
            elapsed += time.perf_counter() - start
            expected = _expected_counts(task, len(scan), scan.detector)
            value = float(physics.poisson_nll_per_photon(scan.counts, expected))
            history["nll_per_photon"].append(value)
            if on_progress is not None:
                on_progress(iteration, {"nll_per_photon": value})
            if iteration % every == 0 or iteration == iterations:
                log.info("%s iteration %d/%d  NLL/photon=%.6g  %.1fs  ETA %.0fs", settings.kind,
                         iteration, iterations, value, elapsed,
                         elapsed / iteration * (iterations - iteration))
            if not np.isfinite(value):
                raise FloatingPointError(
                    f"{settings.kind} diverged at iteration {iteration}: NLL per photon {value}")
            if settings.tolerance > 0 and abs(previous - value) < settings.tolerance:
                break
            previous = value
        obj = task.get_data_to_cpu("object", as_numpy=True)[0]
        refined = _refined(task, settings, engine.scale, scan)
    done = len(history["nll_per_photon"])
    log.info("%s: %d iterations on %d patterns in %.1fs on %s, NLL/photon %.5g", settings.kind,
             done, len(scan), elapsed, device, history["nll_per_photon"][-1])
    return Reconstruction(
        obj=np.asarray(obj, np.complex64), expected=expected,
        expected_patterns=np.arange(len(scan)), history=history, tags={"device": device},
        **refined,
        metrics={**metrics, "time_reconstruct_s": elapsed + metrics.get("time_choose_s", 0.0),
                 "iterations_run": float(done), "patterns_reconstructed": float(len(scan)),
                 "patterns_per_s_per_iteration": len(scan) * done / max(elapsed, 1e-9)})


def _refined(task: Any, settings: PtychiSettings, scale: float, scan: Any) -> dict[str, Any]:
    """What the engine refined besides the object, in our conventions: ``probe`` (``(N, N)``
    complex64, pty-chi's first mode less the photon scale) with ``probe_update``, ``positions``
    (``(M, 2)`` float64 ``(x, y)``) with ``position_correction``."""
    refined: dict[str, Any] = {}
    if settings.probe_update:
        probe = task.get_data_to_cpu("probe", as_numpy=True)[0, 0]
        refined["probe"] = (probe.astype(np.complex128) * (scan.N / scale)).astype(np.complex64)
    if settings.position_correction:
        refined["positions"] = np.stack(
            [task.get_probe_positions_x(as_numpy=True), task.get_probe_positions_y(as_numpy=True)],
            axis=1).astype(np.float64)
    return refined


class _Engine:
    """One engine's settings, device and start, making pty-chi tasks for any set of patterns."""

    def __init__(self, api: ModuleType, task_class: type, engine_options: EngineOptions,
                 settings: PtychiSettings, device: str, seed: int, scale: float,
                 object_shape: tuple[int, int], detector: physics.Detector) -> None:
        self.api, self.task_class, self.engine_options = api, task_class, engine_options
        self.settings, self.device, self.seed, self.scale = settings, device, seed, scale
        self.detector = detector
        self.start = initial_object(object_shape, settings.object_init_noise, seed)

    def task(self, counts: np.ndarray, positions: np.ndarray, probe: np.ndarray) -> Any:
        return _task(self.api, self.task_class, self.engine_options(self.api, self.settings),
                     self.settings, counts=counts, positions=positions,
                     probe=ptychi_probe(probe, self.scale), device=self.device,
                     initial_object=self.start, seed=self.seed, detector=self.detector)


def _choose_iterations(engine: _Engine, scan: Any,
                       on_progress: ProgressHook | None) -> tuple[int, list[float], dict]:
    """The iteration count by a rule that reads the data alone: fit all but a random
    ``heldout_fraction`` of the patterns (the job's seed draws them) and follow the Poisson NLL
    per photon of the held-out ones under the fit's object and probe (pty-chi's own forward
    model, through a second task that holds them); the count is the iteration of its minimum
    once ``patience`` iterations have not lowered it (at most ``iterations``).

    Returns:
        ``(count, the held-out NLL per iteration, metrics)``: ``heldout_nll_per_photon_best``
        at the count (a search's objective), ``iterations_chosen``, ``heldout_patterns``,
        ``time_choose_s``.
    """
    settings = engine.settings
    held = np.sort(np.random.default_rng([engine.seed, 0x4E1D]).choice(
        len(scan), max(1, round(settings.heldout_fraction * len(scan))), replace=False))
    fit = np.setdiff1d(np.arange(len(scan)), held)
    curve: list[float] = []
    best, start = 0, time.perf_counter()
    with _quiet(), engine.task(scan.counts[fit], scan.positions[fit], scan.probe) as fitting, \
            engine.task(scan.counts[held], scan.positions[held], scan.probe) as scoring:
        for iteration in range(1, settings.iterations + 1):
            fitting.run(n_epochs=1)
            scoring.copy_data_from_task(fitting, ("object", "probe"))
            value = float(physics.poisson_nll_per_photon(
                scan.counts[held], _expected_counts(scoring, len(held), engine.detector)))
            curve.append(value)
            if on_progress is not None:
                on_progress(iteration, {"heldout_nll_per_photon": value})
            if not np.isfinite(value):
                raise FloatingPointError(f"{settings.kind} diverged at iteration {iteration} "
                                         f"of the held-out fit: NLL per photon {value}")
            best = int(np.argmin(curve)) + 1
            if iteration - best >= settings.patience:
                break
    log.info("%s: %d iterations chosen by the NLL of %d held-out patterns (%.6g; %d run, "
             "%.1fs)", settings.kind, best, len(held), curve[best - 1], len(curve),
             time.perf_counter() - start)
    return best, curve, {"heldout_nll_per_photon_best": curve[best - 1],
                         "iterations_chosen": float(best), "heldout_patterns": float(len(held)),
                         "time_choose_s": time.perf_counter() - start}

"""TensorFlow's process state: quiet start-up, Keras session reset, seeds, dtype policy, devices,
XLA choice; and NumPy's BLAS threads inside the iterative solvers (:func:`one_blas_thread`).

The only module that changes TensorFlow's global configuration, and (with the tracking store's
``MLFLOW_TRACKING_URI``) the only reader of an environment variable: ``TF_CPP_MIN_LOG_LEVEL``,
by :func:`quiet_tensorflow`. Nothing runs at import: each function does its work when called,
and TensorFlow and Keras are imported inside the functions that use them, so that
:func:`quiet_tensorflow` can run before TensorFlow is imported. Signals are the runner's
(:mod:`ptycho.runner.signals`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

__all__ = ["configure_devices", "describe_devices", "gpu_available", "one_blas_thread",
           "quiet_tensorflow", "reset", "resolve_jit_compile"]

log = logging.getLogger(__name__)

_DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def one_blas_thread() -> contextlib.AbstractContextManager:
    """NumPy's BLAS on one thread inside the ``with`` block, for an iterative solver (the phase
    synchronisations' L-BFGS and ARPACK) that alternates small NumPy steps with TensorFlow's
    products:
    OpenBLAS's idle threads spin after each call and take the cores the next product needs
    (measured on the 2-core VM: the quickstart's g=2 likelihood synchronisation, 139 products
    of 28 ms each alone, took 48 ms each beside L-BFGS: 7.5 s, and 4.6 s with this).
    threadpoolctl restores the previous limits on exit."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def reset(seed: int, dtype_policy: str = "float32") -> None:
    """Start a job from a clean Keras state: ``clear_session`` → seeds → dtype policy.

    ``clear_session`` also resets the dtype policy and Keras's seed generator, so the order matters.
    Physics layers compute in float32/complex64 whatever the policy.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if dtype_policy not in _DTYPE_POLICIES:
        raise ValueError(f"dtype_policy must be one of {_DTYPE_POLICIES}, got {dtype_policy!r}")
    import keras

    keras.utils.clear_session(free_memory=True)
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(dtype_policy)


def configure_devices(*, memory_growth: bool = True) -> list[str]:
    """Once per process, before any TensorFlow op: let GPU memory grow on demand (so sequential
    jobs and other processes can share a GPU). Returns the physical devices' names.

    Safe to call again later: once the runtime has started, the setting can no longer change and
    the call only reports the devices.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, memory_growth)
        except RuntimeError:  # runtime already initialised: keep what is set
            log.debug("GPU memory growth already fixed for %s", gpu.name)
    return [device.name for device in tf.config.list_physical_devices()]


def describe_devices() -> dict[str, str]:
    """Human-readable device facts for tracking: visible devices and GPU model names."""
    import tensorflow as tf

    devices = tf.config.list_physical_devices()
    gpus = [d for d in devices if d.device_type == "GPU"]
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(str(details.get("device_name", gpu.name)))
    return {
        "devices": ",".join(d.name.replace("/physical_device:", "") for d in devices),
        "gpu_names": ",".join(names) if names else "none",
        "gpu_count": str(len(gpus)),
    }


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU (imports TensorFlow; initialises no device)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_jit_compile(setting: str | bool) -> bool:
    """Whether to compile the train step with XLA, for ``train.jit_compile``.

    Args:
        setting: ``"auto"`` (XLA on when TensorFlow sees a GPU; off on a CPU, where TensorFlow's
            oneDNN path is 1.5× faster than XLA, measured), ``"true"``/``"false"`` (forced;
            any case), or a bool (forced).

    Raises:
        ValueError: any other setting.
    """
    if isinstance(setting, bool):
        return setting
    choice = str(setting).strip().lower()
    if choice == "auto":
        return gpu_available()
    if choice in ("true", "false"):
        return choice == "true"
    raise ValueError(f"jit_compile must be 'auto', 'true' or 'false', got {setting!r}")


# --- Quiet start-up ------------------------------------------------------------------------------

_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# The value ptycho gave TF_CPP_MIN_LOG_LEVEL itself. Child processes inherit both variables, so a
# job's child process (isolate=true) can tell ptycho's level from one the user set.
_OWN_LOG_LEVEL = "PTYCHO_TF_CPP_MIN_LOG_LEVEL"
_QUIET_LEVEL = "2"  # TensorFlow's C++ INFO and WARNING messages off; errors still shown

# Lines TensorFlow prints while it loads, before absl's logging honours TF_CPP_MIN_LOG_LEVEL
# (measured with TensorFlow 2.21: level 2 and 3 leave the absl and CUDA-stub lines).
_BANNERS = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "TF-TRT Warning",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",  # the second line of the previous one
)
# Dropped only when TensorFlow then sees no GPU (on a GPU machine they report a real problem).
_NO_GPU_BANNERS = (
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "could not retrieve CUDA device count",
)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _StartupFilter:
    """Between :meth:`start` and :meth:`stop`, file descriptor 2 (C's and Python's stderr alike)
    goes through a pipe to a thread that drops the banner lines and passes every other line on to
    the real stderr. Lines of :data:`_NO_GPU_BANNERS` are held back; :meth:`stop` writes them out
    if ``gpu_seen``."""

    def __init__(self) -> None:
        self.gpu_seen = False
        self._held: list[bytes] = []
        self._line_open = False  # the last line passed on has no newline yet
        self._real = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Redirect file descriptor 2 through the filter (``OSError``: left as it was)."""
        sys.stderr.flush()
        self._real = os.dup(2)
        try:
            read, write = os.pipe()
        except OSError:
            os.close(self._real)
            raise
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read,), daemon=True,
                                        name="ptycho-startup-stderr-filter")
        self._thread.start()

    def stop(self) -> None:
        """Give file descriptor 2 back to the real stderr, once the filter has passed on all."""
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self._real, 2)  # the pipe's last writing end closes: the thread reads EOF
        if self._thread is None:  # never started
            return
        self._thread.join(timeout=10.0)
        if self.gpu_seen and self._held:
            _write_all(2, b"\n" * self._line_open + b"".join(self._held))
        if self._thread.is_alive():  # another process holds the pipe: the thread writes on
            log.debug("the start-up stderr filter is still draining")
        else:
            os.close(self._real)

    def _pump(self, read: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._route(line + b"\n")
            if pending:
                self._route(pending)
        finally:
            os.close(read)

    def _route(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace")
        if any(banner in text for banner in _BANNERS):
            return
        if any(banner in text for banner in _NO_GPU_BANNERS):
            self._held.append(line)
            return
        _write_all(self._real, line)
        self._line_open = not line.endswith(b"\n")


def quiet_tensorflow() -> bool:
    """Import TensorFlow without its start-up banners; call it first, before anything imports
    TensorFlow (``run.py`` and a job's child process do).

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` (TensorFlow's C++ INFO and WARNING messages off) and imports
    TensorFlow, and lists its GPUs, with stderr going through a filter that drops the known
    banner lines (the oneDNN notice, cuDNN/cuFFT/cuBLAS factory registration, TF-TRT, the CPU
    instructions notice, absl's "before absl::InitializeLog()" line, and, when TensorFlow sees no
    GPU, the missing CUDA driver lines) and passes everything else on. TensorFlow 2.21 prints
    some of them whatever the level, before its logging reads it.

    A ``TF_CPP_MIN_LOG_LEVEL`` the user set is theirs: it is kept, and nothing is filtered, so
    ``TF_CPP_MIN_LOG_LEVEL=0`` shows everything. Does nothing once TensorFlow is imported.

    Returns:
        Whether TensorFlow was imported here, through the filter.
    """
    if "tensorflow" in sys.modules:
        return False
    level = os.environ.get(_TF_LOG_LEVEL)
    if level is not None and level != os.environ.get(_OWN_LOG_LEVEL):
        return False  # the user's own level
    os.environ[_TF_LOG_LEVEL] = _QUIET_LEVEL
    os.environ[_OWN_LOG_LEVEL] = _QUIET_LEVEL
    startup = _StartupFilter()
    try:
        startup.start()
    except OSError:  # no usable file descriptor 2: nothing to keep quiet
        return False
    try:
        import tensorflow as tf

        startup.gpu_seen = bool(tf.config.list_physical_devices("GPU"))
    finally:
        startup.stop()
    return True

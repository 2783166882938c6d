"""Process and per-job runtime state: quiet start-up, Keras session reset, seeds, dtype policy,
devices, XLA choice, signals.

This is the only module that changes TensorFlow's global configuration or a process's signal
handlers, and the only place an environment variable is read or set (``TF_CPP_MIN_LOG_LEVEL``,
by :func:`quiet_tensorflow`). Nothing runs at import: each function does its work when called,
and TensorFlow and Keras are imported inside the functions that use them, so that
:func:`quiet_tensorflow` can run before TensorFlow is imported.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

__all__ = [
    "Terminated",
    "child_processes",
    "configure_devices",
    "describe_devices",
    "exit_code",
    "follow_parent_process",
    "gpu_available",
    "install_forwarding_termination_handlers",
    "install_termination_handlers",
    "quiet_tensorflow",
    "reset",
    "resolve_jit_compile",
    "termination_handlers",
    "termination_signal",
    "uninterrupted",
]

log = logging.getLogger(__name__)

_TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []  # the termination signals this process has received, in order
_uninterrupted_depth = 0  # nesting of uninterrupted() blocks in the main thread
_held: list[Callable[[], None]] = []  # a termination held until the outermost block ends


class Terminated(KeyboardInterrupt):
    """A termination signal arrived (SIGTERM from ``kill``/SLURM, SIGINT from Ctrl-C).

    A ``KeyboardInterrupt``, so it unwinds through ``except Exception`` blocks (the job's run is
    then closed as KILLED, never FAILED) and ends the process unless someone handles it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"terminated by {signal.Signals(self.signum).name}")

    def __reduce__(self) -> tuple[type, tuple[int]]:
        # Rebuilt from its signal number when a worker process sends it back to a launcher.
        return (type(self), (self.signum,))


def exit_code(interrupt: BaseException) -> int:
    """The shell's exit status for a process ended by ``interrupt``: 128 + signal number."""
    signum = getattr(interrupt, "signum", int(signal.SIGINT))
    return 128 + signum


def termination_signal() -> int | None:
    """The first termination signal this process received and has not handled, if any (for
    end-of-process cleanup)."""
    return _received[0] if _received else None


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Within the block (in the main thread) a termination signal is held, not raised: it takes
    effect, as :class:`Terminated`, when the outermost such block ends (normally or not).

    For calls into the tracking store. A SQLite transaction cut by ``Terminated`` keeps its lock
    for as long as the exception's traceback holds its connection, i.e. exactly while the job
    closes its run as KILLED: that write then waits for the lock, fails ("database is locked")
    and the run stays RUNNING. Signal handlers run only in the main thread, so other threads'
    blocks need no holding.
    """
    global _uninterrupted_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _uninterrupted_depth += 1
    try:
        yield
    finally:
        _uninterrupted_depth -= 1
        if _uninterrupted_depth == 0 and _held:
            _held.pop()()


def _terminate(finish: Callable[[], None]) -> None:
    """Run ``finish`` (which raises :class:`Terminated`) now, or at the end of the
    :func:`uninterrupted` block the main thread is in."""
    if _uninterrupted_depth > 0:
        log.debug("termination held until the tracking store call ends")
        _held[:] = [finish]
        return
    finish()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    if not first:  # already unwinding: let the cleanup of the first signal finish
        log.warning("%s received while stopping; still closing runs", signal.Signals(signum).name)
        return

    def finish() -> None:
        raise Terminated(signum)

    _terminate(finish)


def install_termination_handlers() -> dict[int, object]:
    """From now on SIGTERM and SIGINT raise :class:`Terminated` (once; repeats are logged and
    ignored while the first one unwinds). Returns the previous handlers, for
    :func:`termination_handlers`. Does nothing outside the main thread (Python allows signal
    handlers only there) and returns ``{}``."""
    if threading.current_thread() is not threading.main_thread():
        log.debug("not the main thread: termination signals keep their handlers")
        return {}
    previous = {}
    for signum in _TERMINATION_SIGNALS:
        previous[int(signum)] = signal.signal(signum, _raise_terminated)
    return previous


def child_processes() -> list[int]:
    """Process ids of this process's live children (Linux ``/proc``; elsewhere ``[]``)."""
    me, children = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # state, ppid, ...
        if fields[1] == str(me) and fields[0] not in ("Z", "X"):
            children.append(int(stat.parent.name))
    return children


def install_forwarding_termination_handlers(
    *,
    on_signal: Callable[[int], None],
    busy: Callable[[], bool],
    grace_s: float = 60.0,
) -> None:
    """Termination handlers for a process that launches job processes (a parallel launcher).

    On the first SIGTERM/SIGINT: ``on_signal(signum)`` (the sweep marks itself stopping, so no
    queued job starts), SIGTERM to every child process (job processes close their runs as
    KILLED; SIGTERM because some launchers' controllers pass it on gracefully, not SIGINT), a
    wait of up to ``grace_s`` while ``busy()`` (jobs still closing), then :class:`Terminated`
    here. A second signal during the wait ends the wait.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    hurry = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if _received:
            _received.append(signum)
            log.warning("%s again: no longer waiting for job processes", name)
            hurry.set()
            return
        _received.append(signum)
        on_signal(signum)
        children = child_processes()
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

        def finish() -> None:
            # Waited for outside any store call: a transaction held open here would block the
            # very writes (the jobs closing their runs) that the wait is for.
            if children and busy():
                log.warning("%s: stopping %d job process(es); waiting up to %.0f s for their "
                            "runs to close (%s again: stop waiting)", name, len(children),
                            grace_s, name)
                deadline = time.monotonic() + grace_s
                while busy() and time.monotonic() < deadline and not hurry.is_set():
                    time.sleep(0.2)
            raise Terminated(signum)

        _terminate(finish)

    for signum in _TERMINATION_SIGNALS:
        signal.signal(signum, forward)


def follow_parent_process() -> None:
    """For a job's child process: receive SIGTERM when the parent dies (Linux ``prctl``), so an
    orphan never trains on holding a GPU; and ignore SIGUSR1/SIGUSR2, which cluster schedulers
    send to every process of a job as a warning and which the parent's launcher handles."""
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError):  # not Linux
        log.debug("no prctl here: an orphaned job process is not signalled")


@contextmanager
def termination_handlers() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise :class:`Terminated`; after it, the handlers in
    place before (a launcher's, Python's default) are restored and the signals received within
    it count as handled (a worker process that lives on starts its next job afresh)."""
    received_before = len(_received)
    previous = install_termination_handlers()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        del _received[received_before:]


_DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


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

"""Process and per-job runtime state: Keras session reset, seeds, dtype policy, devices, signals.

This is the only module that changes TensorFlow's global configuration or a process's signal
handlers (and the only place an environment variable may be read; none is today). Nothing runs
at import: each function does its work when called.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import keras
import tensorflow as tf

__all__ = [
    "Terminated",
    "child_processes",
    "configure_devices",
    "describe_devices",
    "exit_code",
    "install_forwarding_termination_handlers",
    "install_termination_handlers",
    "reset",
    "termination_handlers",
    "termination_signal",
]

log = logging.getLogger(__name__)

_TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []  # the termination signals this process has received, in order


class Terminated(KeyboardInterrupt):
    """A termination signal arrived (SIGTERM from ``kill``/SLURM, SIGINT from Ctrl-C).

    A ``KeyboardInterrupt``, so it unwinds through ``except Exception`` blocks (the job's run is
    then closed as KILLED, never FAILED) and ends the process unless someone handles it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"terminated by {signal.Signals(self.signum).name}")


def exit_code(interrupt: BaseException) -> int:
    """The shell's exit status for a process ended by ``interrupt``: 128 + signal number."""
    signum = getattr(interrupt, "signum", int(signal.SIGINT))
    return 128 + signum


def termination_signal() -> int | None:
    """The first termination signal this process received, if any (for end-of-process cleanup)."""
    return _received[0] if _received else None


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    if not first:  # already unwinding: let the cleanup of the first signal finish
        log.warning("%s received while stopping; still closing runs", signal.Signals(signum).name)
        return
    raise Terminated(signum)


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


def install_forwarding_termination_handlers(grace_s: float = 60.0) -> None:
    """Like :func:`install_termination_handlers`, for a process that launches job processes
    (a parallel launcher): a termination signal is first passed on to its child processes,
    which close their runs as KILLED (waiting up to ``grace_s`` for them to exit), then
    :class:`Terminated` is raised here."""
    if threading.current_thread() is not threading.main_thread():
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        if not _received:
            children = child_processes()
            for pid in children:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while children and time.monotonic() < deadline:
                time.sleep(0.2)
                children = [pid for pid in children if pid in child_processes()]
        _raise_terminated(signum, frame)

    for signum in _TERMINATION_SIGNALS:
        signal.signal(signum, forward)


@contextmanager
def termination_handlers() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise :class:`Terminated`; the handlers in place
    before (a launcher's, Python's default) are restored after it."""
    previous = install_termination_handlers()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

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
    keras.utils.clear_session(free_memory=True)
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(dtype_policy)


def configure_devices(*, memory_growth: bool = True) -> list[str]:
    """Once per process, before any TensorFlow op: let GPU memory grow on demand (so sequential
    jobs and other processes can share a GPU). Returns the physical devices' names.

    Safe to call again later: once the runtime has started, the setting can no longer change and
    the call only reports the devices.
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, memory_growth)
        except RuntimeError:  # runtime already initialised: keep what is set
            log.debug("GPU memory growth already fixed for %s", gpu.name)
    return [device.name for device in tf.config.list_physical_devices()]


def describe_devices() -> dict[str, str]:
    """Human-readable device facts for tracking: visible devices and GPU model names."""
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

"""Termination signals: SIGTERM and SIGINT stop a job with its run closed as KILLED, never cut
a tracking-store call in half, and reach the job processes of a parallel launcher.

The only module that changes a process's signal handlers; what it must remember between calls
lives in :mod:`ptycho.runner.process`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from ptycho.runner.process import PROCESS

__all__ = ["Terminated", "child_processes", "exit_code", "follow_parent_process",
           "install_forwarding_termination_handlers", "install_termination_handlers",
           "termination_handlers", "termination_signal", "uninterrupted"]

log = logging.getLogger(__name__)

_TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
    return 128 + getattr(interrupt, "signum", int(signal.SIGINT))


def termination_signal() -> int | None:
    """The first termination signal this process received and has not handled, if any (for
    end-of-process cleanup)."""
    return PROCESS.received[0] if PROCESS.received else None


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
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    PROCESS.uninterrupted_depth += 1
    try:
        yield
    finally:
        PROCESS.uninterrupted_depth -= 1
        if PROCESS.uninterrupted_depth == 0 and PROCESS.held:
            PROCESS.held.pop()()


def _terminate(finish: Callable[[], None]) -> None:
    """Run ``finish`` (which raises :class:`Terminated`) now, or at the end of the
    :func:`uninterrupted` block the main thread is in."""
    if PROCESS.uninterrupted_depth > 0:
        log.debug("termination held until the tracking store call ends")
        PROCESS.held[:] = [finish]
        return
    finish()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    first = not PROCESS.received
    PROCESS.received.append(signum)
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
    return {int(signum): signal.signal(signum, _raise_terminated)
            for signum in _TERMINATION_SIGNALS}


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


def install_forwarding_termination_handlers(*, on_signal: Callable[[int], None],
                                            busy: Callable[[], bool],
                                            grace_s: float = 60.0) -> None:
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
        if PROCESS.received:
            PROCESS.received.append(signum)
            log.warning("%s again: no longer waiting for job processes", name)
            hurry.set()
            return
        PROCESS.received.append(signum)
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
    received_before = len(PROCESS.received)
    previous = install_termination_handlers()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        del PROCESS.received[received_before:]

"""Is a RUNNING run still being worked on? Heartbeats and stale-run detection.

A job killed outright (SIGKILL, out-of-memory killer, a lost node) never closes its run: it stays
RUNNING. A resumed sweep must not count it as in progress forever, nor rerun a job that really
is running elsewhere. Each job therefore tags its run with host, process id and process start
(:func:`~ptycho.runner.tracking.provenance.host_tags`) and a ``heartbeat`` (unix seconds)
renewed every minute by :class:`Heartbeat`. A RUNNING run is stale when its process is gone
(same host) or its heartbeat is older than ``stale_after_s`` (another host).
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from ptycho.runner.tracking.provenance import process_state
from ptycho.runner.tracking.store import RunRecord, Tracker

__all__ = ["HEARTBEAT_TAG", "Heartbeat", "close_stale_runs", "stale_reason"]

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "heartbeat"


def stale_reason(run: RunRecord, stale_after_s: float, now: float | None = None) -> str | None:
    """Why the RUNNING ``run`` is stale (its job's process is gone), or ``None`` if it may be
    alive. Same host: the recorded process must exist (with the recorded start time, so a reused
    id does not count). Another host: the heartbeat must be younger than ``stale_after_s``."""
    now = time.time() if now is None else now
    tags = run.tags
    host, pid = tags.get("host"), tags.get("process_id")
    state = process_state(host, pid, tags.get("process_start"))
    if state == "dead":
        return f"its process {pid} on host {host} is gone (killed outright or crashed)"
    if state == "alive":
        return None
    try:
        beat = float(tags.get(HEARTBEAT_TAG, run.start_time))
    except ValueError:
        beat = run.start_time
    silent = now - beat
    if silent > stale_after_s:
        return (f"no heartbeat from process {pid} on host {host} for {silent:.0f} s "
                f"(> tracking.stale_after_s={stale_after_s:g})")
    return None


def close_stale_runs(tracker: Tracker, experiment_id: str, filter_string: str,
                     stale_after_s: float, note: str) -> list[RunRecord]:
    """Close the RUNNING runs matching ``filter_string`` whose process is gone as FAILED
    (``status_reason=stale``, ``error``: why, then ``note``); return the others (alive, or on
    another host with a recent heartbeat)."""
    alive = []
    for run in tracker.find_running(experiment_id, filter_string):
        reason = stale_reason(run, stale_after_s)
        if reason is None:
            alive.append(run)
            continue
        message = f"stale: left RUNNING, {reason}; {note}"
        log.warning("run %s (%s) %s", run.run_id, run.name, message)
        try:
            tracker.close_run(run.run_id, "FAILED", "stale", message)
        except Exception:  # another sweep may have closed it meanwhile
            log.exception("could not mark stale run %s FAILED", run.run_id)
    return alive


class Heartbeat:
    """Renews tag ``heartbeat`` on a run now and every ``interval_s`` from a daemon thread, while
    the ``with`` block runs. A failed renewal is logged, never raised (the job goes on)."""

    def __init__(self, tracker: Tracker, run_id: str, interval_s: float = 60.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self._tracker, self._run_id, self._interval = tracker, run_id, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        try:
            self._tracker.set_tags(self._run_id, {HEARTBEAT_TAG: f"{time.time():.0f}"})
        except Exception as error:  # a busy store must not stop the job
            log.warning("heartbeat of run %s not recorded: %s", self._run_id, error)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()

    def start(self) -> Heartbeat:
        """Beat now, then every ``interval_s`` until :meth:`stop`."""
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="ptycho-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

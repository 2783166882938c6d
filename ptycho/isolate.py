"""``isolate=true``: a job in a fresh child process, so all it held is freed at its end.

TensorFlow never hands GPU memory back to the device while its process lives, and a process that
runs many jobs (the basic launcher's one process, joblib's reused workers) also keeps compiled
XLA programs and graph caches. Spawning a fresh interpreter per job costs a few seconds of
imports and gives the next job on that GPU a clean device and a clean process.

The parent (the launcher's job process) waits for the child, forwards SIGTERM/SIGINT to it (the
child then closes its run as KILLED), and, if the child dies without reporting (SIGKILL, the
out-of-memory killer, a crash), closes the run it left RUNNING as FAILED, saying how it died.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from ptycho import runtime
from ptycho.config import validate
from ptycho.job import JobContext, JobOutcome, run_job, tracker_for
from ptycho.tracking import host_tags

__all__ = ["run_job_isolated"]

log = logging.getLogger(__name__)

_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
_STOP_GRACE_S = 120.0  # how long a signalled child may take to close its run


def _child(cfg: dict[str, Any], context: JobContext, connection: Connection,
           log_files: list[str], level: int) -> None:
    """The child's whole life: logging like the parent's, run the job, send the outcome."""
    logging.basicConfig(level=level, format=_LOG_FORMAT)
    for path in log_files:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        logging.getLogger().addHandler(handler)
    with runtime.termination_handlers():
        try:
            outcome = run_job(cfg, context, on_killed=connection.send)
        except KeyboardInterrupt as interrupt:
            connection.close()
            raise SystemExit(runtime.exit_code(interrupt)) from None
        except BaseException:
            connection.send(JobOutcome("?", "FAILED", error=traceback.format_exc(limit=3)))
            raise
    connection.send(outcome)
    connection.close()


def run_job_isolated(
    cfg: dict[str, Any],
    context: JobContext,
    *,
    on_killed: Callable[[JobOutcome], None] | None = None,
) -> JobOutcome:
    """:func:`ptycho.job.run_job` in a fresh (spawned) child process; same contract.

    Args:
        cfg: the resolved config as plain containers (it is pickled to the child).
        context: the job's context.
        on_killed: called with the KILLED outcome when a termination signal stopped the job.
    """
    spawn = multiprocessing.get_context("spawn")
    receive, send = spawn.Pipe(duplex=False)
    root = logging.getLogger()
    log_files = [h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)]
    child = spawn.Process(target=_child, name=f"ptycho-job-{context.job_index}",
                          args=(cfg, context, send, log_files, root.getEffectiveLevel()))
    child.start()
    send.close()  # the child holds the only writing end: recv() ends when it exits
    log.info("job %d runs in child process %d (isolate=true)", context.job_index, child.pid)
    outcome: JobOutcome | None = None
    try:
        with runtime.termination_handlers():
            outcome = _receive(receive)
            child.join()
    except KeyboardInterrupt as interrupt:
        signum = getattr(interrupt, "signum", int(signal.SIGINT))
        if child.is_alive():
            os.kill(child.pid, signum)  # a repeat of a signal it already got is ignored there
        child.join(_STOP_GRACE_S)
        if child.is_alive():
            child.kill()
            child.join()
        outcome = _receive(receive) if outcome is None else outcome
        killed = outcome or JobOutcome("?", "KILLED", error=str(interrupt) or "interrupted")
        if on_killed is not None:
            on_killed(killed)
        raise
    if outcome is not None and outcome.status != "KILLED":
        return outcome
    if outcome is not None:  # KILLED by a signal sent to the child alone
        if on_killed is not None:
            on_killed(outcome)
        raise runtime.Terminated(child.exitcode - 128 if (child.exitcode or 0) > 128
                                 else int(signal.SIGTERM))
    return _child_died(cfg, context, child.pid, child.exitcode)


def _receive(connection: Connection) -> JobOutcome | None:
    """The outcome the child sent, or ``None`` once it has exited without sending one."""
    try:
        return connection.recv()
    except (EOFError, OSError):
        return None


def _child_died(cfg: dict[str, Any], context: JobContext, pid: int | None,
                exitcode: int | None) -> JobOutcome:
    """The child ended without an outcome: close the RUNNING run it left, as FAILED."""
    how = (f"killed by {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0
           else f"exited with code {exitcode}")
    if exitcode == -signal.SIGKILL:
        how += " (the out-of-memory killer, or kill -9)"
    message = f"job process {pid} {how} before reporting"
    log.error("job %d: %s", context.job_index, message)
    settings = validate(cfg)
    outcome = JobOutcome(settings.name, "FAILED", error=message,
                         config_hash=settings.config_hash)
    try:
        tracker = tracker_for(settings.resolved["tracking"], context.project_root)
        experiment_id = context.experiment_id or tracker.ensure_experiment(
            settings.tracking.experiment)
        here = host_tags()["host"]
        for run in tracker.find_running(
                experiment_id, f"tags.config_hash = '{settings.config_hash}'"):
            if run.tags.get("process_id") == str(pid) and run.tags.get("host") == here:
                tracker.set_tags(run.run_id, {"error": message, "status_reason": "died"})
                tracker.end_run(run.run_id, "FAILED")
                outcome = replace(outcome, run_id=run.run_id)
    except Exception:
        log.exception("could not close the run left by job process %s", pid)
    return outcome

"""``isolate=true``: a job in a fresh child process, so all it held is freed at its end.

TensorFlow never hands GPU memory back to the device while its process lives, and a process that
runs many jobs (the basic launcher's one process, joblib's reused workers) also keeps compiled
XLA programs and graph caches. Spawning a fresh interpreter per job costs a few seconds of
imports and gives the next job on that GPU a clean device and a clean process.

The parent (the launcher's job process) waits for the child. When the parent is stopped (SIGTERM,
SIGINT, a launcher's exit) it passes SIGTERM on and the child closes its run as KILLED; if the
child dies without reporting (SIGKILL, the out-of-memory killer, a crash), the parent closes the
run it left RUNNING as FAILED, saying how it died. The child gets SIGTERM if the parent dies.
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

from ptycho.config import validate
from ptycho.runner.job import open_tracker, run_job
from ptycho.runner.outcome import JobContext, JobOutcome
from ptycho.runner.signals import exit_code, follow_parent_process, termination_handlers
from ptycho.runner.tracking import host_tags

__all__ = ["run_job_isolated"]

log = logging.getLogger(__name__)

_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
_STOP_GRACE_S = 120.0  # how long a signalled child may take to close its run


def _child(cfg: dict[str, Any], context: JobContext, connection: Connection,
           log_files: list[str], level: int) -> None:
    """The child's whole life: logging like the parent's, run the job, send the outcome."""
    follow_parent_process()
    logging.basicConfig(level=level, format=_LOG_FORMAT)
    for path in log_files:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        logging.getLogger().addHandler(handler)
    with termination_handlers():
        try:
            outcome = run_job(cfg, context, on_killed=connection.send)
            connection.send(outcome)  # still under the handlers: a late signal cannot cut it
        except KeyboardInterrupt as interrupt:
            connection.close()
            raise SystemExit(exit_code(interrupt)) from None
        except BaseException:
            connection.send(JobOutcome("?", "FAILED", error=traceback.format_exc(limit=3)))
            raise
    connection.close()


def run_job_isolated(cfg: dict[str, Any], context: JobContext, *,
                     on_killed: Callable[[JobOutcome], None] | None = None) -> JobOutcome:
    """:func:`ptycho.runner.job.run_job` in a fresh (spawned) child process; same contract.

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
    outcome: JobOutcome | None = None
    with termination_handlers():
        try:
            try:
                child.start()
            except Exception as error:  # e.g. no memory or no process slots to spawn it
                return _not_started(cfg, context, error)
            finally:
                send.close()  # the child holds the only writing end (even if a signal landed)
            log.info("job %d runs in child process %d (isolate=true)", context.job_index,
                     child.pid)
            outcome = _receive(receive, child)
            child.join(_STOP_GRACE_S)
        except BaseException as stop:  # a signal, or a launcher's exit (e.g. a SLURM requeue)
            outcome = _stop_child(child, receive, outcome, stop, cfg, context)
            if outcome.status == "KILLED" and on_killed is not None:
                on_killed(outcome)
            raise
        finally:
            if child.is_alive():  # hung while exiting after it reported
                log.warning("job process %d did not exit; killing it", child.pid)
                child.kill()
                child.join()
    if outcome is not None:  # also KILLED, by a signal sent to the child alone: this job ends,
        return outcome       # the sweep goes on
    return _child_died(cfg, context, child.pid, child.exitcode)


def _stop_child(child: Any, receive: Connection, outcome: JobOutcome | None,
                stop: BaseException, cfg: dict[str, Any], context: JobContext) -> JobOutcome:
    """This process is being stopped: have the child close its run (SIGTERM, then a grace
    period), kill it if it does not; returns the outcome it reported or one made here."""
    if child.pid is not None and child.is_alive():
        os.kill(child.pid, signal.SIGTERM)  # a repeat of a signal it already got is ignored
        child.join(_STOP_GRACE_S)
    if child.pid is not None and child.is_alive():
        child.kill()
        child.join()
    if outcome is None:
        outcome = _receive(receive, child)
    if outcome is None:  # never reported: close what it left RUNNING ourselves
        reason = str(stop) or type(stop).__name__
        outcome = _close_left_run(cfg, context, child.pid, "KILLED",
                                  f"job process {child.pid} stopped: {reason}")
    return outcome


def _receive(connection: Connection, child: Any, poll_s: float = 0.5) -> JobOutcome | None:
    """The outcome the child sent, or ``None`` once it has exited without sending one (or was
    never started). Polls, so a pipe whose writing end leaked can never block forever."""
    while True:
        try:
            if connection.poll(poll_s):
                return connection.recv()
        except (EOFError, OSError):
            return None
        if child.pid is None or not child.is_alive():  # gone: one last look at the pipe
            try:
                return connection.recv() if connection.poll(0) else None
            except (EOFError, OSError):
                return None


def _not_started(cfg: dict[str, Any], context: JobContext, error: Exception) -> JobOutcome:
    """The child process could not be started: the job fails, with the reason; no run exists."""
    config = validate(cfg)
    message = f"could not start the job's child process: {type(error).__name__}: {error}"
    log.error("job %d: %s", context.job_index, message)
    return JobOutcome(config.name(context.name_extras()), "FAILED", error=message,
                      config_hash=config.config_hash)


def _child_died(cfg: dict[str, Any], context: JobContext, pid: int | None,
                exitcode: int | None) -> JobOutcome:
    """The child ended without an outcome: close the RUNNING run it left, as FAILED."""
    how = (f"killed by {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0
           else f"exited with code {exitcode}")
    if exitcode == -signal.SIGKILL:
        how += " (the out-of-memory killer, or kill -9)"
    message = f"job process {pid} {how} before reporting"
    log.error("job %d: %s", context.job_index, message)
    return _close_left_run(cfg, context, pid, "FAILED", message)


def _close_left_run(cfg: dict[str, Any], context: JobContext, pid: int | None, status: str,
                    message: str) -> JobOutcome:
    """Close the RUNNING run of this config that process ``pid`` created (if it got that far)
    with ``status`` and ``message``; the job's outcome says the same."""
    config = validate(cfg)
    outcome = JobOutcome(config.name(context.name_extras()), status, error=message,
                         config_hash=config.config_hash)
    try:
        tracker, _ = open_tracker(config.tracking.uri, config.tracking.artifact_location,
                                  context.project_root)
        experiment_id = context.experiment_id or tracker.ensure_experiment(
            config.tracking.experiment)
        here = host_tags()["host"]
        for run in tracker.find_running(
                experiment_id, f"tags.config_hash = '{config.config_hash}'"):
            if run.tags.get("process_id") == str(pid) and run.tags.get("host") == here:
                tracker.close_run(run.run_id, status,
                                  "died" if status == "FAILED" else "killed", message)
                outcome = replace(outcome, run_id=run.run_id)
    except Exception:
        log.exception("could not close the run left by job process %s", pid)
    return outcome

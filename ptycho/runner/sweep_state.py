"""The sweep's state on disk, ``<sweep dir>/.ptycho/``: one object, one documented format.

Every process of a sweep (the launcher, the job processes of a parallel launcher, the launcher's
plugins) coordinates through these files and only through :class:`SweepState`:

Format 1 (``FORMAT``):

- ``sweep.json``: written by the launching process before any job starts, rewritten once the
  parent run exists::

      {"format": 1, "sweep_dir": "...", "job_total": 12,
       "launcher": {"host": "vm", "pid": 4821},
       "swept": ["dose", "gridsize", "train.epochs"],        # keys with more than one value
       "parent_run_id": "...", "experiment_id": "1",          # absent in a dry run
       "tracking_uri": "sqlite:///..."}

- ``jobs.jsonl``: one line per finished job, ``{"job_index": i, "name", "status", "run_id",
  "metrics", "error", "config_hash"}``; a requeued job may appear twice (the last line wins).
- ``running/<job_index>``: present while that job is in flight (holds its process id).
- ``stopping``: the launcher got a termination signal; queued jobs must not start.
- ``summary.txt``: the end-of-sweep table.

A reader refuses a ``sweep.json`` of another format (it says which). Writes that may fail (a full
disk) log and never raise: losing a marker must not lose a job.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "STATE_DIR", "SweepState", "SweepStateError"]

log = logging.getLogger(__name__)

FORMAT = 1
STATE_DIR = ".ptycho"


class SweepStateError(RuntimeError):
    """``sweep.json`` was written in another format (by another version of ptycho)."""


class SweepState:
    """The state folder of the sweep in ``sweep_dir``."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.folder = self.sweep_dir / STATE_DIR

    # --- the sweep --------------------------------------------------------------------------

    def start(self, *, job_total: int, swept: Iterable[str]) -> dict[str, Any]:
        """A new sweep in this folder (a rerun of the same folder starts afresh): clears the
        previous outcomes and markers and writes ``sweep.json`` naming this process as the
        launcher. Returns what it wrote."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in ("jobs.jsonl", "stopping", "summary.txt"):
            (self.folder / leftover).unlink(missing_ok=True)
        shutil.rmtree(self.folder / "running", ignore_errors=True)
        info = {"format": FORMAT, "sweep_dir": str(self.sweep_dir), "job_total": int(job_total),
                "launcher": {"host": platform.node(), "pid": os.getpid()},
                "swept": sorted(set(swept))}
        self._write_info(info)
        return info

    def set_parent(self, *, parent_run_id: str, experiment_id: str, tracking_uri: str) -> None:
        """Record the sweep's parent run (after :meth:`start`)."""
        info = self.read()
        info.update(parent_run_id=parent_run_id, experiment_id=experiment_id,
                    tracking_uri=tracking_uri)
        self._write_info(info)

    def set_job_total(self, job_total: int) -> None:
        """Correct the number of jobs (after :meth:`start`): a search sweeper knows how many
        trials remain only once it has opened its study."""
        info = self.read()
        info["job_total"] = int(job_total)
        self._write_info(info)

    def _write_info(self, info: Mapping[str, Any]) -> None:
        temporary = self.folder / "sweep.json.tmp"
        temporary.write_text(json.dumps(dict(info), indent=2))
        temporary.replace(self.folder / "sweep.json")  # readers never see half a file

    def read(self) -> dict[str, Any]:
        """``sweep.json``; ``{}`` when it is missing or unreadable.

        Raises:
            SweepStateError: it was written in another format.
        """
        try:
            info = json.loads((self.folder / "sweep.json").read_text())
        except (OSError, ValueError):
            return {}
        if info.get("format") != FORMAT:
            raise SweepStateError(f"{self.folder / 'sweep.json'}: sweep state format "
                                  f"{info.get('format')!r}, this ptycho reads format {FORMAT}")
        return info

    def is_launcher(self, info: Mapping[str, Any] | None = None) -> bool:
        """Whether this process launched the sweep (same host and same process id)."""
        launcher = (info if info is not None else self.read()).get("launcher") or {}
        return launcher.get("host") == platform.node() and launcher.get("pid") == os.getpid()

    # --- jobs -------------------------------------------------------------------------------

    def record(self, job_index: int, outcome: Mapping[str, Any]) -> None:
        """Append job ``job_index``'s outcome to ``jobs.jsonl``; never raises."""
        line = json.dumps({**dict(outcome), "job_index": int(job_index)})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with (self.folder / "jobs.jsonl").open("a") as handle:
                handle.write(line + "\n")
        except OSError as error:
            log.error("could not record the outcome of job %d in %s: %s", job_index,
                      self.folder, error)

    def outcomes(self, job_total: int | None = None) -> list[dict[str, Any]]:
        """The recorded outcome of every job, by index: the last one when a job was requeued;
        unreadable lines are skipped. With ``job_total``, a job that recorded nothing (its
        process died) is listed as FAILED."""
        path = self.folder / "jobs.jsonl"
        latest: dict[int, dict[str, Any]] = {}
        try:
            lines = path.read_text().splitlines() if path.is_file() else []
        except OSError as error:
            log.error("could not read %s: %s", path, error)
            lines = []
        for line in lines:
            try:
                outcome = json.loads(line)
                latest[int(outcome["job_index"])] = outcome
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    log.warning("skipping an unreadable line of %s: %.80s", path, line)
        for index in range(job_total or 0):
            latest.setdefault(index, {
                "job_index": index, "name": f"job {index + 1}", "status": "FAILED",
                "metrics": {}, "error": "no outcome recorded: its process died or it never "
                "started"})
        return [latest[index] for index in sorted(latest)]

    @contextmanager
    def in_flight(self, job_index: int) -> Iterator[None]:
        """Marks job ``job_index`` as in flight while the block runs, so a stopping launcher
        knows when its jobs have closed their runs."""
        marker = self.folder / "running" / str(job_index)
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))
        except OSError as error:
            log.error("could not mark job %d in flight: %s", job_index, error)
        try:
            yield
        finally:
            marker.unlink(missing_ok=True)

    def busy(self) -> bool:
        """Whether any job is in flight."""
        return any((self.folder / "running").glob("*"))

    # --- stopping and the end ---------------------------------------------------------------

    def stop(self, signum: int) -> None:
        """The launcher got signal ``signum``: no queued job may start."""
        try:
            (self.folder / "stopping").write_text(str(signum))
        except OSError as error:
            log.error("could not mark the sweep stopping: %s", error)

    @property
    def stopping(self) -> bool:
        return (self.folder / "stopping").exists()

    def write_summary(self, table: str) -> Path | None:
        """``summary.txt``; its path, or ``None`` when it could not be written."""
        path = self.folder / "summary.txt"
        try:
            path.write_text(table + "\n")
        except OSError as error:
            log.error("could not write the sweep summary: %s", error)
            return None
        return path

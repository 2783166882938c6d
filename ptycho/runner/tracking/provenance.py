"""Where a result came from: git commit and dirty flag, package versions, host and process."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["git_state", "host_tags", "package_versions", "process_state"]

_PACKAGES = ("ptycho", "tensorflow", "keras", "mlflow", "hydra-core", "omegaconf", "numpy",
             "scipy", "scikit-image")


def git_state(root: str | Path) -> dict[str, str]:
    """``{"git_commit": sha or "unknown", "git_dirty": "true"/"false"/"unknown"}``."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown",
            "git_dirty": "unknown" if status is None else str(bool(status)).lower()}


def package_versions() -> dict[str, str]:
    """``{"version.<package>": version}`` for the packages a result depends on."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"version.{name}"] = "absent"
    versions["version.python"] = platform.python_version()
    return versions


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc``), or ``None`` when
    there is no such process or no ``/proc``. Told apart from a later process given the same id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (command) "
    if fields[0] in ("Z", "X"):  # a zombie or dead process has exited
        return None
    return fields[19]  # field 22 of proc(5): starttime


def host_tags() -> dict[str, str]:
    """Host name, process id and process start of the job (parallel launchers run jobs in other
    processes; :func:`process_state` later tells whether that process still lives)."""
    pid = os.getpid()
    return {"host": platform.node(), "process_id": str(pid),
            "process_start": _start_ticks(pid) or "unknown"}


def process_state(host: str | None, pid: str | None, start: str | None) -> str:
    """``"alive"``, ``"dead"`` or ``"unknown"`` (another host, or no process id) for the process
    a run's :func:`host_tags` describe."""
    if not host or host != platform.node() or not pid or not pid.isdigit():
        return "unknown"
    if start and start != "unknown" and Path("/proc").is_dir():
        return "alive" if _start_ticks(int(pid)) == start else "dead"
    try:
        os.kill(int(pid), 0)  # no /proc: signal 0 only asks whether the id exists
    except ProcessLookupError:
        return "dead"
    except PermissionError:  # exists, owned by someone else
        return "alive"
    return "alive"

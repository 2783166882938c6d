"""Where a result came from: git commit and dirty flag, package versions, host and process."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["git_state", "host_tags", "package_versions"]

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
    return {
        "git_commit": commit or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
    }


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


def host_tags() -> dict[str, str]:
    """Host name and process id of the job (parallel launchers run jobs in other processes)."""
    return {"host": platform.node(), "process_id": str(os.getpid())}

"""``ptycho.runtime``'s process start: quiet TensorFlow start-up and the XLA choice.

The CLI tests run ``python run.py`` in a subprocess with the environment a user has (no
``TF_CPP_MIN_LOG_LEVEL``: this suite's conftest sets one, which would count as the user's).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ptycho import runtime

ROOT = Path(__file__).resolve().parents[1]
# One line of each start-up banner TensorFlow 2.21 prints (or has printed) while it loads.
BANNERS = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "Unable to register cu",
    "TF-TRT Warning",
    "This TensorFlow binary is optimized",
    "To enable the following instructions",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "could not retrieve CUDA device count",
)
OUR_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[ptycho\.")


def user_environment(**set_: str) -> dict[str, str]:
    """This process's environment without the TensorFlow log level (and ptycho's record of
    having set it), plus ``set_``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PTYCHO_TF_CPP_MIN_LOG_LEVEL")}
    return {**env, **set_}


def banners_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(b in line for b in BANNERS)]


# --- resolve_jit_compile -------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "expected"), [
    ("true", True), ("false", False), ("TRUE", True), ("False", False), (True, True),
    (False, False),
])
def test_jit_compile_forced(setting: str | bool, expected: bool) -> None:
    assert runtime.resolve_jit_compile(setting) is expected


def test_jit_compile_auto_means_xla_exactly_when_a_gpu_is_visible() -> None:
    assert runtime.resolve_jit_compile("auto") is runtime.gpu_available()
    assert runtime.resolve_jit_compile("Auto") is runtime.gpu_available()


@pytest.mark.parametrize("setting", ["yes", "", "xla", "1"])
def test_jit_compile_rejects_other_settings(setting: str) -> None:
    with pytest.raises(ValueError, match="jit_compile"):
        runtime.resolve_jit_compile(setting)


# --- quiet start-up ------------------------------------------------------------------------------


def test_importing_runtime_does_not_import_tensorflow() -> None:
    """quiet_tensorflow must be able to run before TensorFlow is imported."""
    probe = "import ptycho.runtime, sys; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("gpu_seen", [False, True])
def test_the_filter_drops_only_banners(capfd: pytest.CaptureFixture[str], gpu_seen: bool) -> None:
    """Written to file descriptor 2 (as TensorFlow's C++ code does): banners dropped, everything
    else passed on in order; the no-GPU lines kept when a GPU is seen."""
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1.5    42 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.",
        "ours: first",
        "I0000 00:00:1.6    42 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to "
        "use available CPU instructions in performance-critical operations.",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
        "with the appropriate compiler flags.",
        "I0000 00:00:1.7    42 port.cc:153] oneDNN custom operations are on. You may see slightly "
        "different numerical results.",
        "E0000 00:00:1.8    42 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
        "register factory for plugin cuDNN when one has already been registered",
        "W0000 00:00:1.9    42 tf2tensorrt] TF-TRT Warning: Could not find TensorRT",
        "E0000 00:00:2.0    42 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
        "Traceback: a real error",
    ]
    capfd.readouterr()
    startup = runtime._StartupFilter()
    startup.start()
    try:
        for line in lines:
            os.write(2, (line + "\n").encode())
        os.write(2, b"no newline at the end")
        startup.gpu_seen = gpu_seen
    finally:
        startup.stop()
    err = capfd.readouterr().err
    passed = ["ours: first", "Traceback: a real error", "no newline at the end"]
    held = [line for line in lines if "cuda drivers" in line or "cuInit" in line]
    assert err.splitlines() == passed + (held if gpu_seen else [])


@pytest.mark.slow
def test_a_level_the_user_set_turns_the_filter_off() -> None:
    """``TF_CPP_MIN_LOG_LEVEL=0``: quiet_tensorflow does nothing (returns False, no TensorFlow
    import), so TensorFlow's own lines reach stderr when it is imported."""
    probe = ("import sys; from ptycho import runtime; quiet = runtime.quiet_tensorflow(); "
             "imported = 'tensorflow' in sys.modules; import tensorflow as tf; "
             "tf.config.list_physical_devices(); print(quiet, imported)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False,
                          env=user_environment(TF_CPP_MIN_LOG_LEVEL="0"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]
    assert banners_in(done.stderr), done.stderr  # at level 0 TensorFlow 2.21 prints several


@pytest.mark.slow
def test_quiet_tensorflow_filters_when_the_level_is_unset() -> None:
    probe = ("import os; from ptycho import runtime; quiet = runtime.quiet_tensorflow(); "
             "print(quiet, runtime.quiet_tensorflow(), os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False, env=user_environment())
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False", "2"]  # a second call does nothing
    assert banners_in(done.stderr) == [], done.stderr


@pytest.mark.slow
def test_run_py_starts_quietly_in_an_isolated_child(tmp_path: Path) -> None:
    """``python run.py dry_run=true isolate=true``: no TensorFlow banner from the launching
    process or the job's child process; the first line printed is ours. (The launching process
    alone: tests/test_run.py, whose CLI tests all check it.)"""
    isolate = True
    command = [sys.executable, "run.py", "dry_run=true", "experiment=smoke",
               f"isolate={str(isolate).lower()}", f"hydra.run.dir={tmp_path}/run"]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300, check=False, env=user_environment())
    assert done.returncode == 0, done.stdout[-4000:]
    assert banners_in(done.stdout) == [], done.stdout
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines and OUR_LOG_LINE.match(lines[0]), done.stdout
    assert "would run" in done.stdout


def test_one_blas_thread_limits_numpys_blas_inside_and_restores_it_after() -> None:
    """The iterative solvers' guard (:func:`runtime.one_blas_thread`): one BLAS thread inside,
    the process's own count again outside."""
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    np.ones((4, 4)) @ np.ones((4, 4))  # BLAS loaded
    with threadpool_limits(limits=2, user_api="blas"):  # (this suite runs one thread each)
        before = blas_threads()
        with runtime.one_blas_thread():
            inside = blas_threads()
        after = blas_threads()
    assert before and set(before) == {2}
    assert inside == [1] * len(before)
    assert after == before

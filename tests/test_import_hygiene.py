"""Guarantee 1: importing any ``ptycho`` module builds no model, creates no ``tf.Variable``,
initialises no device (GPU or otherwise) and reads no environment variable.

Checked in a fresh subprocess, so nothing this test session imported earlier can hide a violation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    r"""
    import importlib, json, os, pkgutil, sys
    # Third-party imports first: only ptycho's own behaviour is under test.
    import numpy, scipy, tensorflow as tf, keras
    import ptycho

    package_dir = os.path.dirname(ptycho.__file__)
    env_reads = []

    class Spy(type(os.environ)):
        def __getitem__(self, key):
            self._note(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            self._note(key)
            return super().get(key, default)

        def __contains__(self, key):
            self._note(key)
            return super().__contains__(key)

        def _note(self, key):
            # The first frames outside os/importlib machinery: is the reader ptycho code?
            frame = sys._getframe(2)
            for _ in range(4):
                if frame is None:
                    break
                if frame.f_code.co_filename.startswith(package_dir):
                    env_reads.append(f"{key} at {frame.f_code.co_filename}:{frame.f_lineno}")
                    break
                frame = frame.f_back

    spy = Spy(os.environ._data, os.environ.encodekey, os.environ.decodekey,
              os.environ.encodevalue, os.environ.decodevalue)
    os.environ = spy
    variables = []

    def record(next_creator, **kwargs):
        variables.append(kwargs.get("name"))
        return next_creator(**kwargs)

    modules = []
    with tf.variable_creator_scope(record):
        for info in pkgutil.walk_packages(ptycho.__path__, "ptycho."):
            importlib.import_module(info.name)
            modules.append(info.name)
    try:
        # Raises RuntimeError once the runtime has initialised its devices (any op, variable or
        # model does that; on a GPU machine it would also have claimed the GPU).
        tf.config.threading.set_intra_op_parallelism_threads(
            tf.config.threading.get_intra_op_parallelism_threads()
        )
        devices_untouched = True
    except RuntimeError:
        devices_untouched = False
    heavy = sorted(name for name in ("torch", "ptychi", "triton") if name in sys.modules)
    print(json.dumps({"modules": modules, "variables": variables, "env_reads": env_reads,
                      "devices_untouched": devices_untouched, "heavy": heavy}))
    """
)


def test_importing_every_ptycho_module_has_no_side_effects() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ptycho.physics", "ptycho.data"} <= set(report["modules"])
    assert report["variables"] == []
    assert report["env_reads"] == []
    assert report["devices_untouched"], "a ptycho import initialised TensorFlow's devices"
    assert "ptycho.arms.ptychi" in report["modules"]
    assert report["heavy"] == [], "importing ptycho loaded torch/pty-chi (only a run may)"


def test_the_probe_detects_a_violation() -> None:
    """The check itself works: creating a tensor after the imports is caught."""
    leaky = PROBE.replace("try:\n    # Raises", "tf.constant(1.0)\ntry:\n    # Raises")
    assert leaky != PROBE
    result = subprocess.run(
        [sys.executable, "-c", leaky], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["devices_untouched"] is False

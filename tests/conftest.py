"""Test-wide setup: quiet TensorFlow's C++ logging and skip ``gpu`` tests where there is no GPU.

Setting the environment here is test infrastructure; the library itself reads no environment
variable outside ``ptycho.runtime``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    skip = pytest.mark.skip(reason="needs a GPU; TensorFlow sees none on this machine")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)

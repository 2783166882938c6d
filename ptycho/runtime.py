"""Process and per-job runtime state: Keras session reset, seeds, dtype policy, devices.

This is the only module that changes TensorFlow's global configuration (and the only place an
environment variable may be read; none is today). Nothing runs at import: each function does
its work when called.
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

__all__ = ["configure_devices", "describe_devices", "reset"]

log = logging.getLogger(__name__)

_DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def reset(seed: int, dtype_policy: str = "float32") -> None:
    """Start a job from a clean Keras state: ``clear_session`` → seeds → dtype policy.

    ``clear_session`` also resets the dtype policy and Keras's seed generator, so the order matters.
    Physics layers compute in float32/complex64 whatever the policy.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if dtype_policy not in _DTYPE_POLICIES:
        raise ValueError(f"dtype_policy must be one of {_DTYPE_POLICIES}, got {dtype_policy!r}")
    keras.utils.clear_session(free_memory=True)
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(dtype_policy)


def configure_devices(*, memory_growth: bool = True) -> list[str]:
    """Once per process, before any TensorFlow op: let GPU memory grow on demand (so sequential
    jobs and other processes can share a GPU). Returns the physical devices' names.

    Safe to call again later: once the runtime has started, the setting can no longer change and
    the call only reports the devices.
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, memory_growth)
        except RuntimeError:  # runtime already initialised: keep what is set
            log.debug("GPU memory growth already fixed for %s", gpu.name)
    return [device.name for device in tf.config.list_physical_devices()]


def describe_devices() -> dict[str, str]:
    """Human-readable device facts for tracking: visible devices and GPU model names."""
    devices = tf.config.list_physical_devices()
    gpus = [d for d in devices if d.device_type == "GPU"]
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(str(details.get("device_name", gpu.name)))
    return {
        "devices": ",".join(d.name.replace("/physical_device:", "") for d in devices),
        "gpu_names": ",".join(names) if names else "none",
        "gpu_count": str(len(gpus)),
    }

"""Gives every test 8 fake CPU devices; must run before JAX initialises."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Fail loudly if JAX was initialised before the flag was set.
assert jax.device_count() == 8, jax.devices()

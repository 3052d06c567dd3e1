"""The environment for a test's child process: one device, and the suite's
other XLA flags (its fast-compiling codegen) and compilation cache."""

import os


def one_device_env(**extra: str) -> dict[str, str]:
  """os.environ without conftest's 8-device flag, plus `extra`."""
  env = dict(os.environ, **extra)
  flags = [
    f
    for f in env.pop("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  if flags:
    env["XLA_FLAGS"] = " ".join(flags)
  return env

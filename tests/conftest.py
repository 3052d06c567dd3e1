"""Gives every test 8 fake CPU devices (before JAX initialises), a
persistent compilation cache shared by the test processes, and the
session-wide data fixtures: ../shared/data sets, TFDS builds done once."""

import os
from pathlib import Path

# LLVM's optimisation level 0: the suite's programs are tiny and compiled
# once each, so compiling them 1.5-2x faster beats running them faster.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + " --xla_force_host_platform_device_count=8"
  + " --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most of the suite's time is XLA compiling; a resumed run, a second test
# on the same tiny model, the other xdist worker or a subprocess (these
# variables are inherited) compiles the same programs again. The cache
# lives in the checkout (git-ignored), so a fresh clone (CI) starts empty
# and proves everything compiles.
_CACHE = Path(__file__).resolve().parents[1] / ".jax_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.fspath(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
from peers import load_file  # noqa: E402

from idlearn import data  # noqa: E402

# Fail loudly if JAX was initialised before the flag was set.
assert jax.device_count() == 8, jax.devices()


import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared():
  """shared(name) -> ../shared/data/<name> as str, or skip saying why."""

  def get(name: str) -> str:
    path = SHARED / name
    if not path.is_dir():
      pytest.skip(f"{path} is absent (real data kept outside the repo)")
    return os.fspath(path)

  return get


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """One TFDS data_dir per test session (per xdist worker)."""
  return os.fspath(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def built(data_dir):
  """prepare(name) of a bundled set, built once per session."""
  cache = {}

  def get(name, manual_dir=None):
    key = (name, manual_dir)
    if key not in cache:
      cache[key] = data.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
    return cache[key]

  return get


TINY = Path(__file__).with_name("tiny.py")


@pytest.fixture(scope="session")
def tiny():
  """tests/tiny.py: a tiny encoder, synthetic loader and config for
  train-loop tests (also a script: `python tiny.py WORKDIR`)."""
  return load_file(TINY, "tiny")

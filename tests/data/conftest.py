"""Session-wide built datasets: TFDS builds take seconds, do them once."""

import os

import pytest

from idlearn import data


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

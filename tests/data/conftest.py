"""Session-wide built datasets: TFDS builds take seconds, do them once."""

import os
from pathlib import Path

import pytest

from idlearn import data

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


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

"""Peer libraries' source files as modules, without their packages.

torchreid's and lightly's package `__init__` import torchvision (a
multi-GB build kept out of CI); the files the tests compare against need
only torch and NumPy, so they are loaded by path from the installed
package. Used by the peer-comparison tests (`from peers import ...`: the
tests folder is on sys.path, as conftest.py's folder).
"""

import importlib.util
import pathlib
import warnings


def load_file(path, name: str):
  """The Python file at `path` as a module named `name`."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  with warnings.catch_warnings():  # torchreid: "Cython ... unavailable"
    warnings.simplefilter("ignore")
    spec.loader.exec_module(module)
  return module


def package_root(package: str) -> pathlib.Path:
  """Where an installed package's files are (without importing it)."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"{package} is not installed (see README: tests)")
  return pathlib.Path(next(iter(spec.submodule_search_locations)))


def peer_module(package: str, relpath: str):
  """`package/relpath` (e.g. "torchreid", "reid/metrics/rank.py")."""
  name = "_peer_" + package + "_" + relpath.replace("/", "_")[:-3]
  return load_file(package_root(package) / relpath, name)

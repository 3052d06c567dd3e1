"""Dataset registry and `prepare`: build a TFDS dataset once, atomically."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from pathlib import Path

import tensorflow_datasets as tfds

from idlearn.data import faces, reid, video
from idlearn.data._records import IdentityBuilder
from idlearn.errors import DataError

BUILDERS: dict[str, type[IdentityBuilder]] = {
  "market1501": reid.Market1501,
  "msmt17": reid.Msmt17,
  "dukemtmc_reid": reid.DukemtmcReid,
  "mars": video.Mars,
  "pku_reid": reid.PkuReid,
  "att_faces": faces.AttFaces,
  "lfw": faces.Lfw,
  "image_folder": faces.ImageFolder,
}

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
# Datasets with a vendored copy (see bundled/DATA_CARD.md); market1501
# defaults to its 96-image mini subset.
_BUNDLED = {
  "pku_reid": "pku_reid",
  "att_faces": "att_faces",
  "market1501": "market1501_mini",
}

_cache: dict[tuple, IdentityBuilder] = {}


def default_data_dir() -> str:
  """$IDLEARN_DATA_DIR, else ~/tensorflow_datasets."""
  return os.environ.get(
    "IDLEARN_DATA_DIR", os.path.expanduser("~/tensorflow_datasets")
  )


def _config_name(manual_dir: str | None) -> str:
  # One build per source folder, so a cached build of one copy (the bundled
  # mini set, say) is never mistaken for another (the full download).
  if manual_dir is None:
    return "bundled"
  path = os.path.realpath(manual_dir)
  slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(path).lower()).strip("_")
  digest = hashlib.sha1(path.encode()).hexdigest()[:8]
  return f"{slug or 'root'}_{digest}"


def prepare(
  name: str,
  *,
  data_dir: str | os.PathLike | None = None,
  manual_dir: str | os.PathLike | None = None,
  strict: bool = False,
) -> IdentityBuilder:
  """Builds dataset `name` from the files in `manual_dir` (once) and returns
  its TFDS builder.

  The build writes into a temporary folder renamed at the end (TFDS), so a
  failed build leaves nothing that later loads. Calling again is a no-op.

  Args:
    name: one of `BUILDERS`.
    data_dir: where built datasets live; default `default_data_dir()`.
    manual_dir: the user's downloaded files; defaults to the bundled copy for
      pku_reid, att_faces and market1501 (mini subset).
    strict: raise on an unparseable file name or a corrupt image instead of
      skipping it (skipped files are counted in
      `builder.info.metadata["build_log"]`).

  Returns:
    The prepared builder (`builder.as_data_source(split)` reads it).

  Raises:
    ValueError: unknown name, or manual_dir missing or not in the expected
      layout (the message shows the layout).
  """
  if name not in BUILDERS:
    raise DataError(f"name={name!r}: expected one of {sorted(BUILDERS)}")
  cls = BUILDERS[name]
  bundled = manual_dir is None
  if bundled:
    if name not in _BUNDLED:
      raise DataError(
        f"manual_dir is required for {name!r} (no bundled copy). "
        + cls.manual_instructions()
      )
    manual_dir = BUNDLED_DIR / _BUNDLED[name]
  if not os.path.isdir(manual_dir):
    raise DataError(
      f"manual_dir={os.fspath(manual_dir)!r} for {name!r} is not a "
      "directory. " + cls.manual_instructions()
    )
  root = cls.find_root(manual_dir)
  data_dir = os.fspath(data_dir or default_data_dir())
  config = tfds.core.BuilderConfig(
    name=_config_name(None if bundled else root),
    description=f"built from {os.path.realpath(root)}",
  )
  key = (name, os.path.realpath(data_dir), config.name, strict)
  if key in _cache and _cache[key].is_prepared():
    return _cache[key]
  make = lambda: cls(
    config=config,
    data_dir=data_dir,
    file_format="array_record",
    strict=strict,
  )
  builder = make()
  if not builder.is_prepared():
    # Several processes (pytest -n, hosts sharing a disk) may prepare the
    # same dataset: one builds, the others wait and then read its result.
    with _build_lock(data_dir, name, config.name):
      builder = make()  # re-reads the info another process may have written
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=root)
      )
  _cache[key] = builder
  return builder


@contextlib.contextmanager
def _build_lock(data_dir: str, name: str, config_name: str):
  """An exclusive file lock on data_dir/name/config_name.lock (POSIX)."""
  os.makedirs(os.path.join(data_dir, name), exist_ok=True)
  path = os.path.join(data_dir, name, f"{config_name}.lock")
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def build_log(builder: IdentityBuilder) -> dict:
  """Per split: examples kept, unparseable and corrupt files skipped."""
  return dict(builder.info.metadata.get("build_log", {}))

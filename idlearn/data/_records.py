"""Shared machinery of the idlearn TFDS builders.

Every builder reads the user's files from `manual_dir` (nothing downloads),
checks each image by decoding it (by content, never by extension), skips and
counts unparseable names and corrupt files (or raises, with `strict=True`) and
stores the counts in `builder.info.metadata["build_log"]`. Records keep the
generation order (`disable_shuffling`), so a record index is stable.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from idlearn.errors import DataError

# Extensions we look at when listing folders; content decides the format.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".ppm", ".webp")
_KEPT_FORMATS = ("JPEG", "PNG")  # stored as-is; anything else -> PNG.
_MAX_LOGGED = 50  # file names kept per split and reason in the build log.


def image_features(channels: int = 3) -> dict:
  """Features every idlearn dataset has: image, identity, camera, file path."""
  return {
    "image": tfds.features.Image(shape=(None, None, channels)),
    "id": np.int32,
    "cam": np.int32,
    "path": tfds.features.Text(),
  }


def list_images(folder: os.PathLike) -> list[str]:
  """Sorted image file paths directly inside `folder`."""
  names = sorted(os.listdir(folder))
  return [
    os.path.join(folder, n)
    for n in names
    if n.lower().endswith(IMAGE_EXTENSIONS)
  ]


def find_images(root: os.PathLike) -> list[str]:
  """Sorted image file paths anywhere under `root` (recursively)."""
  out = []
  for folder, _, files in os.walk(root):
    out += [
      os.path.join(folder, f)
      for f in files
      if f.lower().endswith(IMAGE_EXTENSIONS)
    ]
  return sorted(out)


def encode_checked(path: str) -> bytes:
  """Returns storable image bytes of `path`; raises OSError if corrupt.

  The whole image is decoded so that truncated files fail here, at build
  time, and not in a training run. JPEG and PNG bytes are kept unchanged;
  other formats (PGM, BMP, ...) are re-encoded losslessly as PNG.
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      if img.format in _KEPT_FORMATS:
        return data
      out = io.BytesIO()
      img.save(out, format="PNG")
      return out.getvalue()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise OSError(f"corrupt or unreadable image {path!r}: {e}") from e


@dataclasses.dataclass
class SplitLog:
  """What a split's generation kept and skipped (and why)."""

  examples: int = 0
  unparseable: list[str] = dataclasses.field(default_factory=list)
  corrupt: list[str] = dataclasses.field(default_factory=list)
  num_unparseable: int = 0
  num_corrupt: int = 0

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


class IdentityBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base class: manual_dir layout check, checked images, a build log.

  Subclasses set `LAYOUT` (entries that must exist under manual_dir),
  `MANUAL_DOWNLOAD_INSTRUCTIONS` (the expected layout, shown in errors),
  optionally
  `LAYOUT_DIRS` (names of a top folder the archive extracts to) and
  implement `_info_features` and `_splits(root) -> {split: items}` where each
  item is `(path, fields)` or `(path, None)` for an unparseable name.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First idlearn release."}
  LAYOUT: Sequence[str] = ()
  MANUAL_DOWNLOAD_INSTRUCTIONS = ""
  LAYOUT_DIRS: Sequence[str] = ()
  CHANNELS = 3
  # TFDS looks for a checksums file next to the builder's code through
  # `importlib_resources`, which is not installed; we download nothing.
  code_path = None

  def __init__(self, *, strict: bool = False, **kwargs):
    self._strict = strict
    self._logs: dict[str, SplitLog] = {}
    self._root = ""
    super().__init__(**kwargs)

  @classmethod
  def manual_instructions(cls) -> str:
    return (
      "Expected layout under manual_dir:\n" + cls.MANUAL_DOWNLOAD_INSTRUCTIONS
    )

  @classmethod
  def find_root(cls, manual_dir: os.PathLike) -> str:
    """The folder holding `LAYOUT`: manual_dir or one of `LAYOUT_DIRS` in it.

    Raises:
      ValueError: naming manual_dir and the expected layout, if absent.
    """
    manual_dir = os.fspath(manual_dir)
    for root in [manual_dir] + [
      os.path.join(manual_dir, d) for d in cls.LAYOUT_DIRS
    ]:
      if all(os.path.exists(os.path.join(root, e)) for e in cls.LAYOUT):
        return root
    missing = [
      e for e in cls.LAYOUT if not os.path.exists(os.path.join(manual_dir, e))
    ]
    raise DataError(
      f"manual_dir={manual_dir!r} does not hold the {cls.name} files "
      f"(missing: {', '.join(missing) or manual_dir}). "
      + cls.manual_instructions()
    )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(self.__doc__ or "").strip(),
      features=tfds.features.FeaturesDict(self._info_features()),
      metadata=tfds.core.MetadataDict(),
      # Record order = generation order, so record indices are stable.
      disable_shuffling=True,
    )

  def _info_features(self) -> dict:
    return image_features(self.CHANNELS)

  def _splits(self, root: str) -> dict[str, list]:
    """{split name: items to generate}; every dataset builder defines it."""
    raise NotImplementedError(f"{type(self).__name__} must define _splits")

  def _split_generators(self, dl_manager):
    root = self.find_root(dl_manager.manual_dir)
    self._root = root
    return {
      name: self._generate_examples(name, items)
      for name, items in self._splits(root).items()
    }

  def _generate_examples(self, split: str, items: list) -> Iterator:
    log = self._logs.setdefault(split, SplitLog())
    for path, fields in items:
      if fields is None:
        self._skip(log, "unparseable", path, "name does not parse")
        continue
      try:
        image = encode_checked(path)
      except OSError as e:
        self._skip(log, "corrupt", path, str(e))
        continue
      log.examples += 1
      # Paths relative to the layout root: the records do not depend on
      # where the files were when the dataset was built.
      rel = os.path.relpath(path, self._root)
      yield rel, {"image": image, "path": rel, **fields}
    if log.examples == 0:
      raise DataError(
        f"{self.name}: split {split!r} has no readable image "
        f"({log.num_unparseable} unparseable names, {log.num_corrupt} "
        "corrupt files). " + self.manual_instructions()
      )
    skipped = log.num_unparseable + log.num_corrupt
    (logging.warning if skipped else logging.info)(
      "%s/%s: %d examples, skipped %d unparseable names and %d corrupt "
      "images (info.metadata['build_log'])", self.name, split, log.examples,
      log.num_unparseable, log.num_corrupt,
    )  # fmt: skip
    # Written into metadata.json together with the dataset (atomically).
    self.info.metadata["build_log"] = {
      k: v.as_dict() for k, v in self._logs.items()
    }

  def _skip(self, log: SplitLog, reason: str, path: str, why: str) -> None:
    if self._strict:
      raise DataError(f"{self.name}: {reason} file {path!r}: {why}")
    logging.warning("%s: skipping %s file %s: %s", self.name, reason, path, why)
    setattr(log, f"num_{reason}", getattr(log, f"num_{reason}") + 1)
    kept = getattr(log, reason)
    if len(kept) < _MAX_LOGGED:
      kept.append(path)

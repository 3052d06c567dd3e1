"""TFDS builders for face sets and generic identity folders.

Faces have no camera: `cam` is -1. Grey images are stored grey and turned
into RGB when loaded.
"""

from __future__ import annotations

import os
import re

from idlearn.data import _records
from idlearn.errors import DataError
from idlearn.evaluators import pairs as verification

_ATT_IMAGE = re.compile(r"^(\d+)\.pgm$")
ATT_TRAIN_SUBJECTS = range(1, 29)  # s1..s28 pretrain; s29..s40 held out.
ATT_TEST_SUBJECTS = range(29, 41)


def _subject_items(root: str, subjects: range) -> list:
  items = []
  for s in subjects:
    for path in _records.list_images(os.path.join(root, f"s{s}")):
      ok = _ATT_IMAGE.match(os.path.basename(path)) is not None
      items.append((path, {"id": s, "cam": -1} if ok else None))
  return items


class AttFaces(_records.IdentityBuilder, skip_registration=True):
  """AT&T / ORL Database of Faces (Samaria & Harter 1994): 40 x 10 images.

  Credit: Olivetti Research Laboratory. Splits: train (s1..s28) and test
  (s29..s40, the held-out verification subjects). `id` = subject number.
  """

  name = "att_faces"
  CHANNELS = 1
  LAYOUT = tuple(f"s{i}" for i in range(1, 41))
  LAYOUT_DIRS = ("att_faces", "orl_faces")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "  <manual_dir>/s1..s40/1.pgm..10.pgm"

  def _splits(self, root: str) -> dict[str, list]:
    return {
      "train": _subject_items(root, ATT_TRAIN_SUBJECTS),
      "test": _subject_items(root, ATT_TEST_SUBJECTS),
    }


def _identity_folders(root: str) -> list[str]:
  return sorted(
    d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
  )


def _folder_items(root: str, names: list[str]) -> list:
  """`<root>/<name>/<image>` items; id = position of the name in `names`."""
  return [
    (path, {"id": i, "cam": -1})
    for i, n in enumerate(names)
    for path in _records.list_images(os.path.join(root, n))
  ]


class Lfw(_records.IdentityBuilder, skip_registration=True):
  """Labeled Faces in the Wild (Huang et al. 2007) with its pairs.txt.

  Split: train (every image; `id` = index of the person's sorted name). The
  10-fold pairs of pairs.txt go into `info.metadata["pairs"]` (path1, path2
  relative to the image folder, same, fold lists).
  """

  name = "lfw"
  LAYOUT = ("pairs.txt",)
  LAYOUT_DIRS = ("lfw_home",)
  IMAGE_DIRS = ("lfw", "lfw-deepfunneled", "lfw_funneled", "lfw-funneled")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "  <manual_dir>/pairs.txt\n"
    "  <manual_dir>/lfw/<Name>/<Name>_0001.jpg (or lfw-deepfunneled/, "
    "lfw_funneled/)"
  )

  def _splits(self, root: str) -> dict[str, list]:
    images = next(
      (
        os.path.join(root, d)
        for d in self.IMAGE_DIRS
        if os.path.isdir(os.path.join(root, d))
      ),
      None,
    )
    if images is None:
      raise DataError(
        f"no LFW image folder in {root!r}. " + self.manual_instructions()
      )
    pairs = verification.parse_lfw_pairs(os.path.join(root, "pairs.txt"))
    self.info.metadata["pairs"] = {
      k: pairs[k].tolist() for k in ("path1", "path2", "same", "fold")
    }
    return {"train": _folder_items(images, _identity_folders(images))}


class ImageFolder(_records.IdentityBuilder, skip_registration=True):
  """Any `<root>/<identity>/<image>` collection (CASIA-WebFace, VGGFace2...).

  Split: train. `id` = index of the identity folder in sorted order.
  """

  name = "image_folder"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "  <manual_dir>/<identity>/<image>.jpg (one folder per identity)"
  )

  def _splits(self, root: str) -> dict[str, list]:
    names = _identity_folders(root)
    if not names:
      raise DataError(
        f"no identity folders in {root!r}. " + self.manual_instructions()
      )
    return {"train": _folder_items(root, names)}

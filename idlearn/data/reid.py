"""TFDS builders for person re-ID image sets.

Features (all builders): `image` (uint8, decoded by content), `id` (the
dataset's person id; Market-1501/DukeMTMC use -1 for junk and 0 for
distractors, kept as such), `cam` (0-based camera index) and `path`.
"""

from __future__ import annotations

import os
import re

from idlearn.data import _records

# <pid>_c<cam>... (Market-1501: 0002_c1s1_000451_03.jpg, junk -1_c1s1_...;
# DukeMTMC-reID: 0001_c2_f0046182.jpg).
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_PKU_NAME = re.compile(r"^(\d+)_(\d+)\.\w+$")  # <cam>_<orientation>.png


def _parse_market(path: str) -> dict | None:
  m = _MARKET_NAME.match(os.path.basename(path))
  if m is None:
    return None
  return {"id": int(m.group(1)), "cam": int(m.group(2)) - 1}


class Market1501(_records.IdentityBuilder, skip_registration=True):
  """Market-1501 (Zheng et al., ICCV 2015): 1,501 ids, 6 cameras.

  Splits: train (bounding_box_train), query, gallery (bounding_box_test).
  Junk images (id -1) and distractors (id 0) are kept with those ids;
  `idlearn.data.reid_eval_sets` drops junk from the gallery, as the protocol
  ignores them, and keeps distractors as never-matching gallery entries.
  """

  name = "market1501"
  LAYOUT = ("bounding_box_train", "query", "bounding_box_test")
  LAYOUT_DIRS = ("Market-1501-v15.09.15", "Market-1501", "market1501_mini")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "  <manual_dir>/bounding_box_train/PPPP_cCsS_FFFFFF_BB.jpg\n"
    "  <manual_dir>/query/...  <manual_dir>/bounding_box_test/...\n"
    "  (the extracted Market-1501-v15.09.15 folder, or its parent)."
  )
  _FOLDERS = {
    "train": "bounding_box_train",
    "query": "query",
    "gallery": "bounding_box_test",
  }

  def _splits(self, root: str) -> dict[str, list]:
    return {
      split: [
        (p, _parse_market(p))
        for p in _records.list_images(os.path.join(root, folder))
      ]
      for split, folder in self._FOLDERS.items()
    }


class DukemtmcReid(Market1501, skip_registration=True):
  """DukeMTMC-reID (Ristani et al. 2016; Zheng et al. 2017): 8 cameras.

  Same layout and splits as Market-1501 (train, query, gallery).
  """

  name = "dukemtmc_reid"
  LAYOUT_DIRS = ("DukeMTMC-reID",)
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "  <manual_dir>/bounding_box_train/PPPP_cC_fFFFFFFF.jpg\n"
    "  <manual_dir>/query/...  <manual_dir>/bounding_box_test/...\n"
    "  (the extracted DukeMTMC-reID folder, or its parent)."
  )


class Msmt17(_records.IdentityBuilder, skip_registration=True):
  """MSMT17 (Wei et al., CVPR 2018): 4,101 ids, 15 cameras, V1 or V2.

  Splits follow the list files: train (list_train + list_val, as usual),
  query, gallery. The id is the list's label; the camera is the third
  `_`-separated field of the file name.
  """

  name = "msmt17"
  LAYOUT = (
    "list_train.txt",
    "list_val.txt",
    "list_query.txt",
    "list_gallery.txt",
  )
  LAYOUT_DIRS = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "  <manual_dir>/list_{train,val,query,gallery}.txt  (lines "
    "'PPPP/PPPP_III_CC_..._.jpg <label>')\n"
    "  <manual_dir>/train/ and <manual_dir>/test/ (V1) or "
    "mask_train_v2/ and mask_test_v2/ (V2)\n"
    "  (the extracted MSMT17_V1 or MSMT17_V2 folder, or its parent)."
  )
  _LISTS = {
    "train": (("train", "list_train.txt"), ("train", "list_val.txt")),
    "query": (("test", "list_query.txt"),),
    "gallery": (("test", "list_gallery.txt"),),
  }

  def _splits(self, root: str) -> dict[str, list]:
    out = {}
    for split, lists in self._LISTS.items():
      items = []
      for part, list_name in lists:
        folder = os.path.join(root, part)
        if not os.path.isdir(folder):
          folder = os.path.join(root, f"mask_{part}_v2")
        with open(os.path.join(root, list_name)) as f:
          for line in f:
            if line.strip():
              items.append(_parse_msmt_line(folder, line))
      out[split] = items
    return out


def _parse_msmt_line(folder: str, line: str) -> tuple[str, dict | None]:
  fields = line.split()
  path = os.path.join(folder, fields[0])
  parts = os.path.basename(fields[0]).split("_")
  if len(fields) != 2 or len(parts) < 3:
    return path, None
  try:
    return path, {"id": int(fields[1]), "cam": int(parts[2]) - 1}
  except ValueError:
    return path, None


def _folder_per_id(folder: str, name_re: re.Pattern) -> list:
  """Items of `<folder>/<pid>/<cam>_<...>` files (PKU-Reid)."""
  items = []
  for pid in sorted(os.listdir(folder)):
    sub = os.path.join(folder, pid)
    if not os.path.isdir(sub):
      continue
    for path in _records.list_images(sub):
      m = name_re.match(os.path.basename(path))
      # isdecimal, not isdigit: "²" is a digit that int() rejects
      ok = m is not None and pid.isdecimal()
      fields = {"id": int(pid), "cam": int(m.group(1)) - 1} if ok else None
      items.append((path, fields))
  return items


class PkuReid(_records.IdentityBuilder, skip_registration=True):
  """PKU-Reid (Ma et al. 2016, arXiv:1605.02464): 2 cameras x 8 orientations.

  Splits: train (train/<pid>/) and val (val/all_imgs/<pid>/). The `.png`
  files hold JPEG bytes; images are identified by content.
  """

  name = "pku_reid"
  LAYOUT = ("train", os.path.join("val", "all_imgs"))
  LAYOUT_DIRS = ("pku_reid", "data")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "  <manual_dir>/train/<pid>/<cam>_<orientation>.png\n"
    "  <manual_dir>/val/all_imgs/<pid>/<cam>_<orientation>.png"
  )

  def _splits(self, root: str) -> dict[str, list]:
    return {
      "train": _folder_per_id(os.path.join(root, "train"), _PKU_NAME),
      "val": _folder_per_id(os.path.join(root, "val", "all_imgs"), _PKU_NAME),
    }

"""TFDS builder for MARS video re-ID tracklets (one record per frame)."""

from __future__ import annotations

import json
import os
import re

import numpy as np

from idlearn.data import _records

# <pid>C<cam>T<tracklet>F<frame>.jpg; MARS writes junk as pid "00-1".
_MARS_NAME = re.compile(r"^(\d\d-1|\d+)C(\d+)T(\d+)F(\d+)\.\w+$")


def parse_mars(path: str) -> dict | None:
  """File name -> {"id", "cam" (0-based), "frame"} or None."""
  m = _MARS_NAME.match(os.path.basename(path))
  if m is None:
    return None
  pid = -1 if m.group(1).endswith("-1") else int(m.group(1))
  return {
    "id": pid,
    "cam": int(m.group(2)) - 1,
    "frame": int(m.group(4)),
    "_key": (pid, int(m.group(2)), int(m.group(3))),
  }


def _items(tracklets: list[list[str]]) -> list:
  """Per-frame items; tracklet = position in `tracklets`, frames in order."""
  items = []
  for t, paths in enumerate(tracklets):
    parsed = [(p, parse_mars(p)) for p in paths]
    parsed.sort(key=lambda pf: (pf[1] is None, pf[1] and pf[1]["frame"]))
    for path, f in parsed:
      if f is not None:
        f = {k: v for k, v in f.items() if k != "_key"} | {"tracklet": t}
      items.append((path, f))
  return items


def _tracklets_from_names(folder: str) -> list[list[str]]:
  """Groups `<folder>/<pid>/*.jpg` by (pid, camera, tracklet number)."""
  groups: dict = {}
  for pid in sorted(os.listdir(folder)):
    sub = os.path.join(folder, pid)
    if os.path.isdir(sub):
      for p in _records.list_images(sub):
        f = parse_mars(p)
        groups.setdefault(f["_key"] if f else ("?", p), []).append(p)
  return [groups[k] for k in sorted(groups, key=str)]


def _tracklets_from_info(root: str) -> dict[str, list[list[str]]]:
  """Query/gallery tracklets from gtPepper/*.json or MARS info/*.mat."""
  pepper = os.path.join(root, "gtPepper")
  if os.path.isdir(pepper):
    out = {}
    for split in ("query", "gallery"):
      with open(os.path.join(pepper, f"{split}.json")) as f:
        out[split] = [
          [os.path.join(root, p) for p in t["img_paths"]] for t in json.load(f)
        ]
    return out
  from scipy import io as sio  # only full MARS needs it

  info = os.path.join(root, "info")
  with open(os.path.join(info, "test_name.txt")) as f:
    names = [n.strip() for n in f if n.strip()]
  tracks = sio.loadmat(os.path.join(info, "tracks_test_info.mat"))
  tracks = tracks["track_test_info"].astype(np.int64)  # [t, 4] 1-based
  query = sio.loadmat(os.path.join(info, "query_IDX.mat"))["query_IDX"]
  query = set(np.asarray(query).ravel().astype(np.int64) - 1)

  def paths(row):
    start, end = int(row[0]) - 1, int(row[1])
    return [os.path.join(root, "bbox_test", n[:4], n) for n in names[start:end]]

  return {
    "query": [paths(tracks[i]) for i in sorted(query)],
    "gallery": [paths(r) for i, r in enumerate(tracks) if i not in query],
  }


class Mars(_records.IdentityBuilder, skip_registration=True):
  """MARS (Zheng et al., ECCV 2016): video re-ID, one record per frame.

  Splits: train (bbox_train, tracklets grouped by pid/camera/tracklet
  number), query and gallery (from gtPepper/*.json, or MARS's
  info/tracks_test_info.mat + query_IDX.mat). Extra features: `tracklet`
  (index within the split) and `frame` (frame number); records of a
  tracklet are consecutive and in frame order.
  """

  name = "mars"
  LAYOUT = ("bbox_train", "bbox_test")
  LAYOUT_DIRS = ("MARS", "mars", "mars_mini")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "  <manual_dir>/bbox_train/<pid>/<pid>C<cam>T<tracklet>F<frame>.jpg\n"
    "  <manual_dir>/bbox_test/<pid>/...\n"
    "  <manual_dir>/info/{test_name.txt,tracks_test_info.mat,"
    "query_IDX.mat} (MARS) or gtPepper/{query,gallery}.json"
  )

  def _info_features(self) -> dict:
    return _records.image_features(3) | {
      "tracklet": np.int32,
      "frame": np.int32,
    }

  def _splits(self, root: str) -> dict[str, list]:
    train = _tracklets_from_names(os.path.join(root, "bbox_train"))
    return {"train": _items(train)} | {
      split: _items(t) for split, t in _tracklets_from_info(root).items()
    }

"""Your own evaluation data, straight from folders and files (no build).

Re-ID query / gallery sets (`reid_set`) from:
- "market" names: `PPPP_cC...jpg` (Market-1501 / DukeMTMC-reID style;
  identity PPPP, camera C; -1 junk is dropped, 0000 distractors kept);
- "folders": `<root>/<identity>/<image>`, the camera read from the file
  name with `camera_pattern` (a regex whose first group is the camera);
- a CSV file `path,id,camera` (a header row is allowed; paths relative to
  the CSV's folder).
Face verification pairs (`pairs_file`) from LFW's pairs.txt (relative to
an image root `<root>/<name>/<name>_0001.jpg`) or a CSV
`path1,path2,same[,fold]`.
"""

import csv
import os
import re

import numpy as np

from idlearn.data._records import find_images
from idlearn.data.reid import _parse_market
from idlearn.errors import DataError

LAYOUTS = ("market", "folders")


def reid_set(
  path: str,
  *,
  layout: str = "market",
  camera_pattern: str = r"c(\d+)",
) -> dict[str, np.ndarray]:
  """A query or gallery set: paths with their identity and camera labels.

  Args:
    path: a folder (see `layout`) or a CSV file `path,id,camera`.
    layout: "market" or "folders" (see the module docstring).
    camera_pattern: "folders": regex on the file name, group 1 = camera.
  Returns:
    {"path": str [n], "id": str [n], "cam": str [n]}; identities and
    cameras are compared as strings (map them to ints with `encode`).
  Raises:
    DataError: a missing path, no image, or a file whose labels cannot be
      read (named).
  """
  if os.path.isfile(path) and path.lower().endswith(".csv"):
    return _csv_set(path)
  if not os.path.isdir(path):
    raise DataError(f"{path}: neither a folder of images nor a .csv file")
  if layout not in LAYOUTS:
    raise DataError(f"layout={layout!r}: expected one of {LAYOUTS}")
  rows, pattern = [], re.compile(camera_pattern)
  for image in find_images(path):
    if layout == "market":
      parsed = _parse_market(image)
      if parsed is None:
        raise DataError(
          f"{image}: not a Market-1501 name (PPPP_cC...); use "
          "layout='folders' or a CSV"
        )
      if parsed["id"] == -1:  # junk
        continue
      ident, cam = str(parsed["id"]), str(parsed["cam"])
    else:
      rel = os.path.relpath(image, path)
      if os.sep not in rel:
        raise DataError(f"{image}: expected <root>/<identity>/<image>")
      match = pattern.search(os.path.basename(image))
      if match is None:
        raise DataError(
          f"{image}: no camera in the name (camera_pattern "
          f"{camera_pattern!r}); pass another pattern or a CSV"
        )
      ident, cam = rel.split(os.sep, 1)[0], match.group(1)
    rows.append((image, ident, cam))
  if not rows:
    raise DataError(f"{path}: no images")
  return _columns(rows)


def _csv_set(path: str) -> dict[str, np.ndarray]:
  base, rows = os.path.dirname(os.path.abspath(path)), []
  with open(path, newline="", encoding="utf-8") as f:
    for line_no, fields in enumerate(csv.reader(f), start=1):
      if not fields or (line_no == 1 and fields[0].strip() == "path"):
        continue
      if len(fields) != 3:
        raise DataError(
          f"{path}, line {line_no}: expected path,id,camera, got {fields}"
        )
      image, ident, cam = (x.strip() for x in fields)
      rows.append((os.path.join(base, image), ident, cam))
  if not rows:
    raise DataError(f"{path}: no rows")
  return _columns(rows)


def _columns(rows) -> dict[str, np.ndarray]:
  paths, ids, cams = zip(*rows, strict=True)
  return {
    "path": np.asarray(paths),
    "id": np.asarray(ids),
    "cam": np.asarray(cams),
  }


def encode(*columns: np.ndarray) -> list[np.ndarray]:
  """String labels -> int codes, consistent across the given columns."""
  names = {v: i for i, v in enumerate(sorted(set(np.concatenate(columns))))}
  return [np.asarray([names[v] for v in c], np.int64) for c in columns]


def pairs_file(path: str, images: str | None = None) -> dict[str, np.ndarray]:
  """Verification pairs: {"path1", "path2" str [m], "same" bool [m],
  "fold" int [m]}.

  Args:
    path: LFW's pairs.txt, or a CSV `path1,path2,same[,fold]` (same: 1/0
      or true/false; paths relative to the CSV's folder).
    images: pairs.txt: the image root (`<images>/<name>/<name>_0001.jpg`).
  Raises:
    DataError: an unreadable file or line (named).
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such pairs file")
  if path.lower().endswith(".csv"):
    return _csv_pairs(path)
  from idlearn.evaluators import pairs as pairs_lib

  if images is None:
    raise DataError(f"{path}: LFW pairs need the image root (--images)")
  try:
    p = pairs_lib.parse_lfw_pairs(path)
  except ValueError as e:
    raise DataError(str(e)) from None
  join = np.vectorize(lambda rel: os.path.join(images, rel))
  return {
    "path1": join(p["path1"]),
    "path2": join(p["path2"]),
    "same": p["same"].astype(bool),
    "fold": p["fold"].astype(np.int64),
  }


def _csv_pairs(path: str) -> dict[str, np.ndarray]:
  base, rows = os.path.dirname(os.path.abspath(path)), []
  truth = {"1": True, "0": False, "true": True, "false": False}
  with open(path, newline="", encoding="utf-8") as f:
    for line_no, fields in enumerate(csv.reader(f), start=1):
      fields = [x.strip() for x in fields]
      if not fields or (line_no == 1 and fields[0] == "path1"):
        continue
      if len(fields) not in (3, 4) or fields[2].lower() not in truth:
        raise DataError(
          f"{path}, line {line_no}: expected path1,path2,same[,fold] "
          f"(same 1/0), got {fields}"
        )
      fold = int(fields[3]) if len(fields) == 4 else line_no % 10
      rows.append(
        (
          os.path.join(base, fields[0]),
          os.path.join(base, fields[1]),
          truth[fields[2].lower()],
          fold,
        )
      )
  if not rows:
    raise DataError(f"{path}: no pairs")
  p1, p2, same, fold = zip(*rows, strict=True)
  return {
    "path1": np.asarray(p1),
    "path2": np.asarray(p2),
    "same": np.asarray(same, bool),
    "fold": np.asarray(fold, np.int64),
  }

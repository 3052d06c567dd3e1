"""Random-access sources and evaluation sets of prepared datasets."""

from __future__ import annotations

import functools
import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from idlearn.data import datasets
from idlearn.errors import DataError

_META_KEYS = ("id", "cam", "tracklet", "frame")


def decode(data: bytes, size: tuple[int, int]) -> np.ndarray:
  """Encoded image bytes -> uint8 [h, w, 3] RGB, resized (bilinear) to size.

  Args:
    data: JPEG/PNG bytes (format found from the content).
    size: (h, w) output size.
  """
  h, w = size
  with Image.open(io.BytesIO(data)) as img:
    img = img.convert("RGB")
    if img.size != (w, h):
      img = img.resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def data_source(builder, split: str):
  """TFDS ArrayRecord source of `split`; "image" stays encoded bytes."""
  if split not in builder.info.splits:
    raise DataError(
      f"split={split!r} not in {builder.name}: expected one of "
      f"{sorted(builder.info.splits)}"
    )
  return builder.as_data_source(
    split, decoders={"image": tfds.decode.SkipDecoding()}
  )


def split_meta(builder, split: str) -> dict[str, np.ndarray]:
  """Labels of every record of `split` (no image decoding).

  Returns:
    dict: id, cam, label int32 [n] (label = position of id among the split's
    sorted ids >= 0, -1 for junk), path str [n], and tracklet, frame int32
    [n] for video sets.
  """
  return _split_meta(os.fspath(builder.data_path), split, builder)


@functools.lru_cache(maxsize=32)
def _split_meta(path: str, split: str, builder) -> dict[str, np.ndarray]:
  # Reading every record costs ~0.2 ms each (proto parsing): minutes for
  # MARS or MSMT17. The labels are kept next to the records after the first
  # read (written atomically; a read-only data_dir just skips the cache).
  cache = os.path.join(path, f"idlearn_meta-{split}.npz")
  if os.path.exists(cache):
    with np.load(cache) as f:
      return {k: f[k] for k in f.files}
  meta = _read_meta(builder, split)
  try:
    tmp = f"{cache}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **meta)
    os.replace(tmp, cache)
  except OSError:
    pass
  return meta


def _read_meta(builder, split: str) -> dict[str, np.ndarray]:
  source = data_source(builder, split)
  rows = [source[i] for i in range(len(source))]
  meta = {
    k: np.asarray([r[k] for r in rows], np.int32)
    for k in _META_KEYS
    if k in rows[0]
  }
  meta["path"] = np.asarray(
    [
      r["path"].decode() if isinstance(r["path"], bytes) else r["path"]
      for r in rows
    ]
  )
  ids = meta["id"]
  classes = np.unique(ids[ids >= 0])
  meta["label"] = np.where(ids >= 0, np.searchsorted(classes, ids), -1).astype(
    np.int32
  )
  return meta


def load_split(
  name: str,
  split: str,
  *,
  image_size: tuple[int, int],
  data_dir: str | None = None,
  manual_dir: str | None = None,
  num_threads: int = 8,
) -> dict[str, np.ndarray]:
  """All images of a (small, evaluation) split in memory.

  Args:
    name, split: dataset and split.
    image_size: (h, w) the images are resized to.
    data_dir, manual_dir: see `datasets.prepare`.
    num_threads: decoding threads.

  Returns:
    dict: image uint8 [n, h, w, 3], id, cam, label int32 [n], path str [n]
    (+ tracklet, frame int32 [n] for video), in record order.
  """
  builder = datasets.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  source = data_source(builder, split)
  meta = split_meta(builder, split)
  size = tuple(image_size)
  with ThreadPoolExecutor(num_threads) as pool:
    images = list(
      pool.map(lambda i: decode(source[i]["image"], size), range(len(source)))
    )
  h, w = size
  image = np.stack(images) if images else np.zeros((0, h, w, 3), np.uint8)
  return {"image": image, **{k: v.copy() for k, v in meta.items()}}


def _select(d: dict, keep: np.ndarray) -> dict:
  return {k: v[keep] for k, v in d.items()}


_REID_PROTOCOL = {
  # name: (query split, gallery split)
  "market1501": ("query", "gallery"),
  "dukemtmc_reid": ("query", "gallery"),
  "msmt17": ("query", "gallery"),
  "mars": ("query", "gallery"),
  "pku_reid": ("val", "val"),
}


def reid_eval_sets(
  name: str,
  *,
  image_size: tuple[int, int],
  data_dir: str | None = None,
  manual_dir: str | None = None,
) -> tuple[dict, dict]:
  """(query, gallery) dicts of `load_split` arrays under the dataset protocol.

  market1501 / dukemtmc_reid / msmt17: query vs bounding_box_test, junk
  (id -1) removed from the gallery, distractors (id 0) kept. pku_reid: every
  val image is a query against all others (query = gallery = val; the
  evaluator drops same-id same-camera entries, the query included). mars:
  per-frame arrays with "tracklet"; pool features per tracklet before
  evaluating.
  """
  if name not in _REID_PROTOCOL:
    raise DataError(
      f"name={name!r} has no re-ID protocol: expected one of "
      f"{sorted(_REID_PROTOCOL)}"
    )
  q_split, g_split = _REID_PROTOCOL[name]
  kw = dict(image_size=image_size, data_dir=data_dir, manual_dir=manual_dir)
  query = load_split(name, q_split, **kw)
  if g_split == q_split:
    return query, query
  gallery = load_split(name, g_split, **kw)
  query = _select(query, query["id"] != -1)
  gallery = _select(gallery, gallery["id"] != -1)
  return query, gallery


def verification_pairs(
  name: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  folds: int = 10,
  pairs_per_fold: int = 60,
  seed: int = 0,
) -> dict[str, np.ndarray]:
  """Face verification pairs over the records of `load_split(name, split)`.

  att_faces: the held-out subjects s29..s40 (split "test"), a seeded
  balanced list from `idlearn.evaluators.pairs.make_pairs`. lfw: the pairs
  of pairs.txt (split "train"; folds, pairs_per_fold and seed are unused).

  Returns:
    dict: "split" (str, the split the indices refer to), "index1",
    "index2" int [m] record indices, "same" bool [m], "fold" int [m].
  """
  from idlearn.evaluators import pairs as pairs_lib

  builder = datasets.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  if name == "att_faces":
    meta = split_meta(builder, "test")
    out = pairs_lib.make_pairs(
      meta["id"], folds=folds, pairs_per_fold=pairs_per_fold, seed=seed
    )
    return {"split": "test", **out}
  if name == "lfw":
    listed = builder.info.metadata["pairs"]
    paths = split_meta(builder, "train")["path"]
    # Record paths are relative to the layout root: "lfw/<name>/<file>".
    where = {p.split(os.sep, 1)[1]: i for i, p in enumerate(paths)}
    wanted = listed["path1"] + listed["path2"]
    missing = sorted({p for p in wanted if p not in where})
    if missing:
      raise DataError(
        f"lfw: {len(missing)} images of pairs.txt are not in the built "
        f"dataset (skipped as corrupt or absent), e.g. {missing[:3]}"
      )
    return {
      "split": "train",
      "index1": np.asarray([where[p] for p in listed["path1"]]),
      "index2": np.asarray([where[p] for p in listed["path2"]]),
      "same": np.asarray(listed["same"], bool),
      "fold": np.asarray(listed["fold"], np.int64),
    }
  raise DataError(
    f"name={name!r}: verification pairs exist for 'att_faces' and 'lfw'"
  )

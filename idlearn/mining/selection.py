"""Training-set search on files: pool folders in, an image folder out.

  records = read_pool({"pku": "pku_reid/train", "market": "m/bbox_train"})
  target = target_images("mars/bbox_train")           # labels unused
  fn, size, about = feature_fn()                       # see its docstring
  sel = select_from_files("snp", records, target, fn, image_size=size,
                          budget=32, clusters=6)
  print(sel.report())
  write_image_folder(records, sel, "runs/snp/selection")

The folder is `<out>/<dataset>_<identity>/<image>` (symlinks or copies),
the layout the `image_folder` data set reads, so the supervised recipe
trains on it as on any data set (`config.input.name = "image_folder"`,
`manual_dir = <out>`); `materialize` does all of the above for a run's
`config.select` (see `idlearn.training.loop`). `idlearn select` is the
command line.

Features: the paper measures FD on ImageNet InceptionV3 pool features of
64x64 images. No pretrained weights are at hand offline, so the default is
the image itself at 8x4 pixels (96-d): colour and coarse layout (assumed
to be much of what a 64x64 Inception statistic sees). Measured on the
bundled data
(FD at 32 images a side, minus the MARS-to-MARS floor, PKU-Reid over
Market-1501, whose cameras MARS shares; higher tells domains apart
better): 8x4 pixels 4.9, 16x8 pixels 4.4, an untrained tiny ResNet 2.6,
an untrained quarter-width ResNet-18 1.7. `encoder=<name>` uses an
untrained idlearn encoder (fixed seed, L2-normalised pooled feature);
`model=` an encoder folder or a training workdir (`idlearn.load`, e.g. one
started from ImageNet weights with `config.model.init`).
"""

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from idlearn import fields
from idlearn.data._records import find_images, list_images
from idlearn.data.reid import _parse_market
from idlearn.errors import ConfigError, DataError
from idlearn.mining import snp

Record = tuple[str, str, str]  # (dataset name, identity, image path)
FeatureFn = Callable[[np.ndarray], np.ndarray]  # uint8 [b,h,w,3] -> [b,d]

FEATURE_FIELDS = {
  "model": "",  # an encoder folder / workdir (idlearn.load), else:
  # "pixels" (the image at image_size, RGB in [0, 1], flattened) or an
  # idlearn.encoders name, untrained
  "encoder": "pixels",
  "encoder_kw": {},  # the untrained encoder's arguments
  "image_size": (8, 4),  # (h, w) (not with model: it has its own)
  "seed": 0,  # the untrained encoder's initialisation seed
  "batch_size": 64,
}
SELECT_FIELDS = {
  "name": fields.REQUIRED,  # snp | random | all (`snp.METHODS`)
  "pool": {},  # {dataset name: folder or CSV} (see `read_pool`)
  "target": "",  # a folder of target images (labels unused)
  "ids": 0,  # identity budget (0: snp keeps its searched set)
  "clusters": 50,  # K of the balanced k-means
  "fill": False,  # snp: fill up to the budget (equal-budget arms)
  "seed": 0,
  "features": {},  # FEATURE_FIELDS
  "copy": False,  # copy the images instead of symlinking them
}


def _market_items(folder: str) -> list[tuple[str, str]]:
  items = []
  for path in list_images(folder):
    parsed = _parse_market(path)
    if parsed is None:
      raise DataError(f"{path}: not a Market-1501 name (PPPP_cC...)")
    if parsed["id"] > 0:  # -1 junk and 0000 distractors are no identity
      items.append((str(parsed["id"]), path))
  return items


def _csv_items(path: str) -> list[tuple[str, str]]:
  from idlearn.data import folders

  s = folders.reid_set(path)
  return list(zip(s["id"].tolist(), s["path"].tolist(), strict=True))


def read_pool(pool: Mapping[str, str]) -> list[Record]:
  """(dataset, identity, image path) of every image of the pool.

  Args:
    pool: {dataset name: path}, the path one of: a folder of identity
      subfolders (`<path>/<identity>/<image>`, e.g. PKU-Reid's train/,
      MARS's bbox_train/); a flat folder of Market-1501 names
      (`PPPP_cC...jpg`: bounding_box_train/; junk -1 and distractors 0000
      dropped, as the official code does); or a CSV `path,id,camera`.
  Raises:
    DataError: an empty pool, a missing path or one without images.
  """
  if not pool:
    raise DataError("the pool is empty: give at least one dataset=PATH")
  records = []
  for name, path in sorted(pool.items()):
    if not re.fullmatch(r"[\w.-]+", name):
      raise DataError(f"pool name {name!r}: use letters, digits, _ . -")
    path = os.fspath(path)
    if os.path.isfile(path) and path.lower().endswith(".csv"):
      items = _csv_items(path)
    elif not os.path.isdir(path):
      raise DataError(f"pool {name}={path}: no such folder or .csv file")
    elif any(os.path.isdir(os.path.join(path, d)) for d in os.listdir(path)):
      items = [
        (ident, p)
        for ident in sorted(os.listdir(path))
        if os.path.isdir(os.path.join(path, ident))
        for p in find_images(os.path.join(path, ident))
      ]
    else:
      items = _market_items(path)
    if not items:
      raise DataError(f"pool {name}={path}: no images of an identity")
    records += [(name, ident, p) for ident, p in items]
  return records


def target_images(path: str) -> list[str]:
  """Image paths under the target folder (recursively, labels unused)."""
  if not os.path.isdir(path):
    raise DataError(f"target={path!r}: no such folder")
  paths = find_images(path)
  if len(paths) < 2:
    raise DataError(f"target={path!r}: {len(paths)} image(s), need >= 2")
  return paths


def read_images(
  paths: Sequence[str], size: tuple[int, int], *, threads: int = 8
) -> np.ndarray:
  """uint8 [n, h, w, 3] of image files (decoded by content, RGB, bilinear
  resize to size = (h, w)); DataError names an unreadable file."""
  from idlearn.data.sources import decode

  def one(path):
    try:
      with open(path, "rb") as f:
        return decode(f.read(), size)
    except Exception as e:  # noqa: BLE001 -- any decoder error: name the file
      raise DataError(f"{path}: not a readable image ({e})") from None

  with ThreadPoolExecutor(threads) as pool:
    images = list(pool.map(one, paths))
  return np.stack(images) if images else np.zeros((0, *size, 3), np.uint8)


def features_of(
  paths: Sequence[str],
  fn: FeatureFn,
  size: tuple[int, int],
  *,
  batch_size: int = 256,
) -> np.ndarray:
  """float32 [n, d] = fn(images) over `paths`, read `batch_size` at a time
  (memory holds one batch of images, not the whole pool)."""
  out = [
    np.asarray(fn(read_images(paths[i : i + batch_size], size)), np.float32)
    for i in range(0, len(paths), batch_size)
  ]
  return np.concatenate(out)


def feature_fn(**kw: Any) -> tuple[FeatureFn, tuple[int, int], str]:
  """The search's features: (fn, the image size fn takes, a description).

  Args:
    **kw: `FEATURE_FIELDS`: model (an encoder folder or a workdir through
      `idlearn.load`: its size and feature), else "pixels" (float32
      [b, h * w * 3] in [0, 1]) or an untrained encoder (`encoder`,
      `encoder_kw`, `seed`) on `image_size` images with the ImageNet
      normalisation; encoders give L2-normalised features.
  """
  cfg = fields.resolve(kw, FEATURE_FIELDS, "features")
  size = tuple(cfg["image_size"])
  if not cfg["model"] and cfg["encoder"] == "pixels":
    pixels = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255
    return pixels, size, f"pixels at {size[0]}x{size[1]}"
  from idlearn.inference import embedder as embedder_lib

  if cfg["model"]:
    emb = embedder_lib.load(cfg["model"])
    about = f"{emb.source} ({emb.feature} feature)"
  else:
    import jax

    from idlearn import encoders
    from idlearn.pretrained import checkpoint

    model = encoders.Backbone(
      encoders.get_encoder(cfg["encoder"], **cfg["encoder_kw"])
    )
    x = np.zeros((1, *size, 3), np.float32)
    variables = model.init(jax.random.key(cfg["seed"]), x, train=False)
    prep = {**checkpoint.DEFAULT_PREPROCESSING, "image_size": size}
    emb = embedder_lib.Embedder(model, variables, prep, source="untrained")
    about = (
      f"untrained {cfg['encoder']} {cfg['encoder_kw'] or ''} (seed "
      f"{cfg['seed']}) at {size[0]}x{size[1]}"
    )
  bs = cfg["batch_size"]
  return lambda x: emb.embed_prepared(x, bs), emb.image_size, about


def select_from_files(
  method: str,
  records: Sequence[Record],
  target: Sequence[str],
  fn: FeatureFn,
  *,
  image_size: tuple[int, int],
  **kw: Any,
) -> snp.Selection:
  """`snp.select` on a pool of files and a target image list.

  Args:
    method: "snp", "random" or "all".
    records: (dataset, identity, path) of each pool image (`read_pool`).
    target: target image paths.
    fn: uint8 [b, h, w, 3] -> float32 [b, d] features.
    image_size: (h, w) the images are resized to for fn.
    **kw: `snp.select` keywords (budget, clusters, seed, fill).
  Returns:
    The `Selection`; identity i is `identities(records)[i]`.
  """
  names, owner = identities(records)
  budget, k = kw.get("budget", 0), kw.get("clusters", 50)
  if budget > len(names):  # checked before the features are computed
    raise DataError(f"ids={budget}: the pool has {len(names)} identities")
  if method == "snp" and not 1 <= k <= len(names):
    raise DataError(f"clusters={k}: expected 1..{len(names)} (pool ids)")
  paths = [p for _, _, p in records]
  feats = features_of(paths, fn, image_size)
  target_feats = features_of(list(target), fn, image_size)
  return snp.select(method, feats, owner, target_feats, names=names, **kw)


def identities(records: Sequence[Record]) -> tuple[list[str], np.ndarray]:
  """(sorted identity names "dataset/identity" [m], owner int [n] of each
  record)."""
  keys = [f"{ds}/{ident}" for ds, ident, _ in records]
  names = sorted(set(keys))
  where = {k: i for i, k in enumerate(names)}
  return names, np.asarray([where[k] for k in keys], np.int64)


def write_image_folder(
  records: Sequence[Record],
  selection: snp.Selection,
  out: str,
  *,
  copy: bool = False,
) -> int:
  """Writes the chosen identities as `<out>/<dataset>_<identity>/<image>`.

  Built in a temporary sibling folder renamed to `out` at the end, so
  `out` is either absent or complete. The report goes to
  `<out>/selection.txt`, the chosen names to `<out>/selection.json` (the
  `image_folder` data set reads only the identity folders).

  Args:
    records: the pool, as given to `select_from_files`.
    selection: its result.
    out: the folder to create; it must not exist (a data set built from a
      folder is cached by its path: new content needs a new path).
    copy: copy the files instead of symlinking them (absolute links).
  Returns:
    The number of images written.
  Raises:
    DataError: `out` exists.
  """
  out = os.path.abspath(out)
  if os.path.exists(out):
    raise DataError(f"out={out}: exists; give a new folder")
  names, owner = identities(records)
  chosen = set(selection.chosen.tolist())
  tmp = f"{out}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier attempt's
  os.makedirs(tmp)
  try:
    count = {}
    for (_, _, path), i in zip(records, owner.tolist(), strict=True):
      if i not in chosen:
        continue
      folder = os.path.join(tmp, re.sub(r"[^\w.-]", "_", names[i]))
      n = count.get(i, 0)
      if n == 0:
        os.makedirs(folder)
      count[i] = n + 1
      dest = os.path.join(folder, f"{n:05d}_{os.path.basename(path)}")
      if copy:
        shutil.copyfile(path, dest)
      else:
        os.symlink(os.path.abspath(path), dest)
    with open(os.path.join(tmp, "selection.txt"), "w") as f:
      f.write(selection.report() + "\n")
    with open(os.path.join(tmp, "selection.json"), "w") as f:
      json.dump(
        {"method": selection.method, "seed": selection.seed,
         "identities": [names[i] for i in selection.chosen]}, f, indent=1,
      )  # fmt: skip
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return sum(count.values())


def materialize(
  config: Mapping[str, Any], root: str, *, write: bool = True
) -> tuple[str, str]:
  """A run's `config.select`: the selection folder under `root`, made once.

  The folder is `<root>/<name>-<hash of the resolved config>`: the same
  config reuses it (a resumed run, `--mode=eval`), a changed one makes a
  new folder (and so a new data set build). Changed pool files under the
  same config are not noticed.

  Args:
    config: `SELECT_FIELDS`.
    root: where selections are kept (the run's workdir/selection).
    write: write the folder (False: processes other than 0 of a
      multi-process run, which take part in the feature computation, a
      computation over every process's devices, and write nothing).
  Returns:
    (folder, the report; "" when the folder was already there).
  """
  cfg = fields.resolve(config, SELECT_FIELDS, "config.select")
  fields.choice(cfg["name"], snp.METHODS, "config.select.name")
  cfg["features"] = fields.resolve(
    cfg["features"], FEATURE_FIELDS, "config.select.features"
  )
  if not cfg["target"] or not cfg["pool"]:
    raise ConfigError("config.select needs a pool {name: folder} and target")
  key = json.dumps(cfg, sort_keys=True, default=list).encode()
  folder = os.path.join(
    os.path.abspath(root),
    f"{cfg['name']}-{hashlib.sha1(key).hexdigest()[:12]}",
  )
  if os.path.isdir(folder):
    return folder, ""
  records = read_pool(cfg["pool"])
  target = target_images(cfg["target"])
  fn, size, about = feature_fn(**cfg["features"])
  sel = select_from_files(
    cfg["name"], records, target, fn, image_size=size, budget=cfg["ids"],
    clusters=cfg["clusters"], seed=cfg["seed"], fill=cfg["fill"],
  )  # fmt: skip
  if not write:
    return folder, ""
  n = write_image_folder(records, sel, folder, copy=cfg["copy"])
  report = f"{sel.report()}\nfeatures: {about}\n{n} images -> {folder}"
  return folder, report

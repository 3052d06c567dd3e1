r"""Choose training identities for a target domain (SnP) -> an image folder.

  idlearn select --pool=pku=data/pku_reid/train \
      --pool=market=data/Market-1501/bounding_box_train \
      --target=data/mars/bbox_train --ids=32 --clusters=6 --fill \
      --out=runs/snp/selection

SnP (Yao et al., CVPR 2023; `idlearn.mining.snp`): pool identities in
equal-size clusters, clusters ranked by the Frechet distance of their
images to the target's, the best-FD prefix kept, then --ids identities
drawn from it. --method=random draws --ids from the whole pool; all keeps
it. A pool entry is NAME=PATH: a folder of identity subfolders, a flat
folder of Market-1501 names, or a CSV path,id,camera; the target is a
folder of images (labels unused). --features: "pixels" (the image at
--feature_size, the default), an idlearn encoder name (untrained, fixed
seed) or an encoder folder / training workdir. Prints the search report and
writes --out/<dataset>_<identity>/<image> (symlinks, or --copy), which
trains as `--config.input.name=image_folder --config.input.manual_dir=OUT`.
"""

import os

from absl import flags

from idlearn.errors import DataError

POOL = flags.DEFINE_multi_string("pool", [], "NAME=PATH, repeated.")
TARGET = flags.DEFINE_string("target", None, "Folder of target images.")
OUT = flags.DEFINE_string("out", None, "Folder to create.")
IDS = flags.DEFINE_integer("ids", 0, "Identity budget (0: snp's set).")
METHOD = flags.DEFINE_enum("method", "snp", ["snp", "random", "all"], "How.")
CLUSTERS = flags.DEFINE_integer("clusters", 50, "K of the k-means.")
FILL = flags.DEFINE_bool("fill", False, "snp: fill up to --ids.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the random draws.")
FEATURES = flags.DEFINE_string("features", "pixels", "See the doc.")
FEATURE_SIZE = flags.DEFINE_list("feature_size", ["8", "4"], "h,w.")
COPY = flags.DEFINE_bool("copy", False, "Copy images (default: symlinks).")


def _pool() -> dict[str, str]:
  pool = {}
  for entry in POOL.value:
    name, sep, path = entry.partition("=")
    if not sep or not name or not path:
      raise DataError(f"--pool={entry}: expected NAME=PATH")
    if name in pool:
      raise DataError(f"--pool={entry}: {name} is given twice")
    pool[name] = path
  return pool


def main(argv: list[str]) -> None:
  del argv
  from idlearn.mining import selection

  if not OUT.value:
    raise DataError("--out is required (a folder to create)")
  if os.path.exists(OUT.value):
    raise DataError(f"--out={OUT.value}: exists; give a new folder")
  records = selection.read_pool(_pool())
  target = selection.target_images(TARGET.value or "")
  try:
    size = tuple(int(x) for x in FEATURE_SIZE.value)
  except ValueError:
    size = ()
  if len(size) != 2 or min(size) < 1:
    raise DataError(f"--feature_size={FEATURE_SIZE.value}: expected h,w")
  kw = dict(image_size=size)
  if FEATURES.value != "pixels" and os.path.exists(FEATURES.value):
    kw["model"] = FEATURES.value
  else:
    kw["encoder"] = FEATURES.value
  try:
    fn, size, about = selection.feature_fn(**kw)
  except ValueError as e:  # an unknown encoder name
    raise DataError(f"--features={FEATURES.value}: {e}") from None
  sel = selection.select_from_files(
    METHOD.value, records, target, fn, image_size=size, budget=IDS.value,
    clusters=CLUSTERS.value, seed=SEED.value, fill=FILL.value,
  )  # fmt: skip
  n = selection.write_image_folder(records, sel, OUT.value, copy=COPY.value)
  print(f"{sel.report()}\nfeatures: {about}\n{n} images -> {OUT.value}")

r"""The field's protocols on your own data, without writing a config.

  idlearn evaluate --model=runs/x --query=q/ --gallery=g/            # re-ID
  idlearn evaluate --model=runs/x --query=q.csv --gallery=g.csv
  idlearn evaluate --model=runs/faces --pairs=pairs.txt --images=lfw/

Re-ID: Market-1501 protocol (same identity and camera excluded from each
query's gallery; CMC, mAP, mINP). Query and gallery are folders of
Market-style names (--layout=market), of <identity>/<image> with the camera
in the file name (--layout=folders, --camera_pattern), or CSV files
path,id,camera. Verification: LFW pairs.txt (with --images) or a CSV
path1,path2,same[,fold]; 10-fold accuracy, ROC AUC, TAR@FAR. Prints the
table training prints.
"""

import numpy as np
from absl import flags

from idlearn.commands import common
from idlearn.errors import DataError

QUERY = flags.DEFINE_string("query", None, "Re-ID query folder or CSV.")
GALLERY = flags.DEFINE_string("gallery", None, "Re-ID gallery folder or CSV.")
LAYOUT = flags.DEFINE_enum(
  "layout", "market", ["market", "folders"], "Re-ID folder layout."
)
CAMERA_PATTERN = flags.DEFINE_string(
  "camera_pattern", r"c(\d+)", "folders: regex, group 1 = camera."
)
PAIRS = flags.DEFINE_string("pairs", None, "Verification pairs file.")
IMAGES = flags.DEFINE_string("images", None, "pairs.txt: the image root.")
NAME = flags.DEFINE_string("name", "data", "Name in the printed table.")


def _features(embedder, paths):
  images, kept, failed = common.read(embedder, paths)
  common.report_failures(failed)
  return common.embed(embedder, images), kept


def reid(embedder) -> dict[str, float]:
  from idlearn.data import folders
  from idlearn.evaluators import reid as reid_lib

  kw = dict(layout=LAYOUT.value, camera_pattern=CAMERA_PATTERN.value)
  q, g = (
    folders.reid_set(QUERY.value, **kw),
    folders.reid_set(GALLERY.value, **kw),
  )
  qf, qk = _features(embedder, q["path"])
  gf, gk = _features(embedder, g["path"])
  qi, gi = folders.encode(q["id"][qk], g["id"][gk])
  qc, gc = folders.encode(q["cam"][qk], g["cam"][gk])
  res = reid_lib.evaluate(qf, qi, qc, gf, gi, gc)
  keys = ("rank1", "rank5", "rank10", "mAP", "mINP")
  return {f"eval/{NAME.value}/{k}": float(res[k]) for k in keys}


def verify(embedder) -> dict[str, float]:
  from idlearn.data import folders
  from idlearn.evaluators import verification

  pairs = folders.pairs_file(PAIRS.value, IMAGES.value)
  unique, index = np.unique(
    np.concatenate([pairs["path1"], pairs["path2"]]), return_inverse=True
  )
  feats, kept = _features(embedder, unique)
  if len(kept) != len(unique):
    raise DataError("every image of the pairs must decode (see above)")
  m = len(pairs["same"])
  res = verification.evaluate(
    feats[index[:m]], feats[index[m:]], pairs["same"], fold_ids=pairs["fold"]
  )
  return verification.scalars(res, NAME.value)


def main(argv: list[str]) -> None:
  del argv
  from idlearn.commands.report import summary

  if bool(PAIRS.value) == bool(QUERY.value or GALLERY.value):
    raise DataError("give --query and --gallery (re-ID) or --pairs")
  if not PAIRS.value and not (QUERY.value and GALLERY.value):
    raise DataError("re-ID needs both --query and --gallery")
  embedder = common.embedder()
  results = verify(embedder) if PAIRS.value else reid(embedder)
  print(f"\nResults ({embedder.source}), in %:\n{summary(results)}")

r"""Features of a folder of images, with a trained encoder.

  idlearn embed --model=runs/quickstart --images=photos/ --output=f.npz
  idlearn embed --model=runs/x/encoder/best --images='cams/**/*.jpg' \
      --output=f.npz

Writes an .npz with "paths" (relative to the folder, or to the glob's
common folder), "features" (float32 [n, d], L2-normalised, as the run's
evaluators computed them) and "failed" (files that did not decode, with the
reason: they are skipped, never the rest).
"""

import os

import numpy as np
from absl import flags

from idlearn.commands import common

IMAGES = flags.DEFINE_string("images", None, "A folder of images or a glob.")
OUTPUT = flags.DEFINE_string("output", "features.npz", "The .npz to write.")


def main(argv: list[str]) -> None:
  del argv
  embedder = common.embedder()
  root, paths = common.image_paths(IMAGES.value or "")
  images, kept, failed = common.read(embedder, paths)
  feats = common.embed(embedder, images)
  rel = [os.path.relpath(paths[i], root) for i in kept]
  out = OUTPUT.value
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp.npz"
  np.savez(
    tmp,
    paths=np.asarray(rel, dtype=str),
    features=feats.astype(np.float32),
    failed=np.asarray([f"{p}: {why}" for p, why in failed], dtype=str),
  )
  os.replace(tmp, out)
  common.report_failures(failed)
  d = feats.shape[1] if len(feats) else 0
  print(f"{len(rel)} images -> {out} ({d}-d features, {embedder.source})")

r"""Identity preservation of generated images, with a trained encoder.

  idlearn score --model=runs/faces --reference=refs/ --generated=gens/

The metric identity-conditioned generation papers report (InstantID,
Arc2Face, ID-Aligner, FaceChain): the cosine similarity of each generated
image's identity feature to its reference identity's (the L2-normalised
mean of that identity's reference features), averaged; and the fraction
of generated images above the verification threshold the model's training
chose (or --threshold). An image's identity is its subfolder
(refs/alice/1.jpg, gens/alice/7.png), or in a flat folder its file name up
to the first "_" (alice.jpg, alice_7.png). --output writes one CSV row per
generated image.
"""

import csv
import os
import sys

import numpy as np
from absl import flags

from idlearn.commands import common
from idlearn.errors import DataError

REFERENCE = flags.DEFINE_string("reference", None, "Reference images.")
GENERATED = flags.DEFINE_string("generated", None, "Generated images.")
THRESHOLD = flags.DEFINE_float(
  "threshold", None, "Cosine threshold (default: the model's, if stored)."
)
OUTPUT = flags.DEFINE_string("output", None, "Optional per-image CSV.")


def identity_of(path: str, root: str) -> str:
  """The identity an image belongs to (see the module docstring)."""
  rel = os.path.relpath(path, root)
  if os.sep in rel:
    return rel.split(os.sep, 1)[0]
  return os.path.splitext(rel)[0].split("_", 1)[0]


def identity_scores(
  ref_feats: np.ndarray,
  ref_ids: list[str],
  gen_feats: np.ndarray,
  gen_ids: list[str],
) -> np.ndarray:
  """cos(generated_i, mean reference of its identity): float [n_gen]."""
  centres = {}
  for ident in set(ref_ids):
    rows = ref_feats[[i for i, r in enumerate(ref_ids) if r == ident]]
    m = rows.mean(0)
    centres[ident] = m / max(np.linalg.norm(m), 1e-12)
  missing = sorted(set(gen_ids) - set(centres))
  if missing:
    raise DataError(
      f"generated identities without reference images: {missing[:10]}"
    )
  return np.asarray(
    [float(f @ centres[i]) for f, i in zip(gen_feats, gen_ids, strict=True)]
  )


def main(argv: list[str]) -> None:
  del argv
  embedder = common.embedder()
  feats, ids, names = {}, {}, {}
  for side, spec in (("reference", REFERENCE), ("generated", GENERATED)):
    root, paths = common.image_paths(spec.value or "")
    images, kept, failed = common.read(embedder, paths, what=side)
    common.report_failures(failed)
    feats[side] = common.embed(embedder, images)
    names[side] = [paths[i] for i in kept]
    ids[side] = [identity_of(p, root) for p in names[side]]
  scores = identity_scores(
    feats["reference"], ids["reference"], feats["generated"], ids["generated"]
  )
  threshold = THRESHOLD.value
  if threshold is None:
    threshold = embedder.threshold
  print(
    f"{len(scores)} generated images of {len(set(ids['generated']))} "
    f"identities: identity similarity {scores.mean():.4f} "
    f"(std {scores.std():.4f})"
  )
  if threshold is not None:
    above = 100 * np.mean(scores >= threshold)
    print(f"above threshold {threshold:.4f}: {above:.1f}%")
  else:
    print(
      "no threshold: pass --threshold (the model stored none)", file=sys.stderr
    )
  if OUTPUT.value:
    with open(OUTPUT.value, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["generated", "identity", "similarity"])
      for path, ident, s in zip(
        names["generated"], ids["generated"], scores, strict=True
      ):
        writer.writerow([path, ident, f"{s:.6f}"])

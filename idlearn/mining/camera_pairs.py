"""Cross-camera positive pairs by maximum-weight matching over a split.

ISR (Dou et al., ICCV 2023) finds positives by maximum-weight bipartite
matching between the instances of two video frames. For still images taken
by several cameras the same matching works between cameras: each camera's
images are matched one-to-one to the images of the other cameras by their
cosine similarity, optionally after subtracting each camera's mean feature
so that the camera itself (background, light) does not decide.
"""

import numpy as np

from idlearn.evaluators.features import center_cameras, unit
from idlearn.mining.matching import max_weight_matching


def mine_cross_camera_pairs(
  feats: np.ndarray,
  cams: np.ndarray,
  *,
  camera_centering: bool = True,
  min_similarity: float = -1.0,
  keep_fraction: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
  """Each image's partner in another camera by maximum-weight matching.

  For every camera c, the images of c are matched one-to-one to the images
  of all other cameras (`max_weight_matching`); an image of c is left
  without partner when c has more images than the others together, its
  match is below `min_similarity`, or its match is not among the
  `keep_fraction` most similar of all matched pairs.

  Args:
    feats: [n, d] features.
    cams: [n] camera ids.
    camera_centering: match unit features minus their camera's mean
      (`evaluators.features.center_cameras`), re-normalised.
    min_similarity: smallest accepted cosine similarity.
    keep_fraction: in (0, 1], the share of matched pairs kept.
  Returns:
    (partner [n] int64, -1 where unmatched; similarity [n] float32 of the
    pair, 0 where unmatched).
  """
  feats, cams = np.asarray(feats, np.float64), np.asarray(cams)
  if feats.ndim != 2 or cams.shape != (len(feats),):
    raise ValueError(
      f"feats must be [n, d] and cams [n], got {feats.shape}, {cams.shape}"
    )
  if not 0 < keep_fraction <= 1:
    raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
  z = unit(center_cameras(feats, cams) if camera_centering else feats)
  partner = np.full(len(feats), -1, np.int64)
  score = np.zeros(len(feats), np.float32)
  for c in np.unique(cams):
    rows, cols = np.flatnonzero(cams == c), np.flatnonzero(cams != c)
    if not len(cols):
      continue
    sim = z[rows] @ z[cols].T
    r, k = max_weight_matching(sim, min_similarity=min_similarity)
    partner[rows[r]] = cols[k]
    score[rows[r]] = sim[r, k]
  matched = np.flatnonzero(partner >= 0)
  keep = int(np.ceil(keep_fraction * len(matched)))
  drop = matched[np.argsort(-score[matched], kind="stable")[keep:]]
  partner[drop], score[drop] = -1, 0.0
  return partner, score

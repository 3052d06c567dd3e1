"""Cross-camera pair mining: the best matching between each camera and the
others, brute-forced."""

import itertools

import numpy as np

from idlearn.mining import camera_pairs


def test_mined_partners_are_the_best_cross_camera_matching():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(8, 4))
  cams = np.array([0, 1, 0, 1, 2, 0, 1, 2])
  for centring in (False, True):
    partner, score = camera_pairs.mine_cross_camera_pairs(
      feats, cams, camera_centering=centring
    )
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    if centring:
      for c in np.unique(cams):
        unit[cams == c] -= unit[cams == c].mean(0)
      unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    for c in np.unique(cams):
      rows, cols = np.flatnonzero(cams == c), np.flatnonzero(cams != c)
      sim = unit[rows] @ unit[cols].T
      best = max(
        itertools.permutations(range(len(cols)), len(rows)),
        key=lambda p, sim=sim: sum(sim[i, j] for i, j in enumerate(p)),
      )
      np.testing.assert_array_equal(partner[rows], cols[list(best)])
      np.testing.assert_allclose(
        score[rows], sim[np.arange(len(rows)), list(best)], rtol=1e-6
      )
  assert (cams[partner] != cams).all()
  partner, _ = camera_pairs.mine_cross_camera_pairs(
    feats, cams, min_similarity=0.99
  )
  assert (partner == -1).any()
  full, full_score = camera_pairs.mine_cross_camera_pairs(feats, cams)
  half, _ = camera_pairs.mine_cross_camera_pairs(feats, cams, keep_fraction=0.5)
  kept = np.flatnonzero(half >= 0)
  np.testing.assert_array_equal(kept, np.sort(np.argsort(-full_score)[:4]))
  np.testing.assert_array_equal(half[kept], full[kept])

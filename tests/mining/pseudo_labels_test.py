"""DomainMix pseudo identities: DBSCAN, reliability criteria, end to end."""

import pathlib

import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image

from idlearn.evaluators import neighbors, reranking
from idlearn.mining import pseudo_labels


def _line_dist(x):
  x = np.asarray(x, np.float64)
  return np.abs(x[:, None] - x[None, :])


def _ref_dbscan(dist, eps, min_samples):
  """Textbook DBSCAN (core points, then BFS) for unambiguous data."""
  n = len(dist)
  nbrs = [np.flatnonzero(dist[i] <= eps) for i in range(n)]
  core = np.array([len(v) >= min_samples for v in nbrs])
  labels = np.full(n, -1)
  c = 0
  for i in range(n):
    if not core[i] or labels[i] >= 0:
      continue
    stack, labels[i] = [i], c
    while stack:
      j = stack.pop()
      for k in nbrs[j]:
        if labels[k] < 0:
          labels[k] = c
          if core[k]:
            stack.append(k)
    c += 1
  return labels


def _same_partition(a, b):
  """Equal up to renaming the clusters (noise must match exactly)."""
  return all(
    len(set(b[a == v])) == 1 and (v >= 0) == (b[a == v][0] >= 0)
    for v in np.unique(a)
  ) and len(np.unique(a)) == len(np.unique(b))


def test_dbscan_matches_textbook_reference():
  rng = np.random.default_rng(0)
  x = np.concatenate(
    [rng.uniform(0, 1, 8), rng.uniform(5, 5.8, 6), [12.0, 20.0]]
  )
  dist = _line_dist(x)
  got = pseudo_labels.dbscan(dist, eps=0.6, min_samples=4)
  assert _same_partition(got, _ref_dbscan(dist, 0.6, 4))
  assert (got[-2:] == -1).all() and len(set(got[:-2])) == 2


# A, B: 5 images each, 0.61 apart (merge at the loose eps 0.62);
# C: isolated; D: 5 + 4 images 0.59 apart (split at the tight eps 0.58).
_GROUPS = {
  "A": [0.0, 0.1, 0.2, 0.3, 0.4],
  "B": [1.01, 1.11, 1.21, 1.31, 1.41],
  "C": [10.0, 10.1, 10.2, 10.3, 10.4],
  "D1": [20.0, 20.1, 20.2, 20.3, 20.4],
  "D2": [20.99, 21.09, 21.19, 21.29],
}
_X = np.concatenate(list(_GROUPS.values()))
_NAMES = np.concatenate([[k] * len(v) for k, v in _GROUPS.items()])


def test_hand_checked_independence_and_compactness():
  labels, info = pseudo_labels.reliable_pseudo_labels(_line_dist(_X))
  # R_indep: A, B = 1 - 5/10 = 0.5; C, D = 0; threshold = 0.5 (90th pct of
  # [0, 0, 0.5, 0.5] -> index 3 (round(3.6) = 4, capped at 3)).
  assert info["indep_threshold"] == pytest.approx(0.5)
  # R_comp: D1 = 1 - 5/9, D2 = 1 - 4/9 > the cluster minimum: D2 is dropped.
  assert (labels[_NAMES == "D2"] == -1).all()
  for g in ("A", "B", "C", "D1"):
    assert len(set(labels[_NAMES == g])) == 1 and labels[_NAMES == g][0] >= 0
  assert info["num_clusters"] == 4 and info["num_dropped"] == 4
  assert sorted(set(labels[labels >= 0])) == [0, 1, 2, 3]
  # A stricter (first-epoch) threshold drops the non-independent A and B.
  labels, _ = pseudo_labels.reliable_pseudo_labels(
    _line_dist(_X), indep_threshold=0.1
  )
  assert (labels[np.isin(_NAMES, ["A", "B", "D2"])] == -1).all()
  assert len(set(labels[np.isin(_NAMES, ["C", "D1"])])) == 2


def _ref_reliable(dist, eps=0.6, gap=0.02, ms=4, min_size=5):
  """Per-image sets, straight from the SpCL / DomainMix definitions."""

  def clusters(e):
    lab = _ref_dbscan(dist, e, ms)
    nxt = lab.max() + 1
    for i in np.flatnonzero(lab < 0):
      lab[i], nxt = nxt, nxt + 1
    return lab

  lab, lt, ll = clusters(eps), clusters(eps - gap), clusters(eps + gap)
  members = lambda lb, i: set(np.flatnonzero(lb == lb[i]))
  iou = lambda a, b: len(a & b) / len(a | b)
  n = len(dist)
  comp = [1 - iou(members(lab, i), members(lt, i)) for i in range(n)]
  indep = [1 - iou(members(lab, i), members(ll, i)) for i in range(n)]
  cids = sorted(set(lab))
  c_comp = {c: min(comp[i] for i in range(n) if lab[i] == c) for c in cids}
  c_ind = {c: min(indep[i] for i in range(n) if lab[i] == c) for c in cids}
  multi = sorted(c_ind[c] for c in cids if np.sum(lab == c) > 1)
  thr = multi[min(len(multi) - 1, int(np.round(len(multi) * 0.9)))]
  kept = [
    lab[i] if c_ind[lab[i]] <= thr and comp[i] <= c_comp[lab[i]] else -1
    for i in range(n)
  ]
  kept = np.array(kept)
  return np.array(
    [k if k >= 0 and np.sum(kept == k) >= min_size else -1 for k in kept]
  )


def test_matches_set_based_reference_on_random_data():
  dropped = 0
  for seed in range(8):  # chains of blobs: clusters merge, split, get cut
    rng = np.random.default_rng(seed)
    x = np.concatenate(
      [rng.normal(c, 0.3, size=rng.integers(3, 10)) for c in np.arange(6) * 1.2]
    )
    dist = _line_dist(x)
    got, info = pseudo_labels.reliable_pseudo_labels(dist)
    assert _same_partition(got, _ref_reliable(dist)), seed
    dropped += info["num_dropped"]
  assert dropped > 0  # the criteria did remove images somewhere


def test_end_to_end_recovers_identities_from_features():
  rng = np.random.default_rng(2)
  centres = rng.normal(size=(4, 32))
  ids = np.repeat(np.arange(4), 8)
  feats = centres[ids] + 0.1 * rng.normal(size=(32, 32))
  labels, info = pseudo_labels.domainmix_pseudo_labels(feats, k1=6, k2=3)
  assert info["num_clusters"] == 4
  assert _same_partition(labels, ids)


def _att_faces():
  """The 400 bundled AT&T faces as 644-d pixel features (4x reduced)."""
  root = pathlib.Path(pseudo_labels.__file__).parents[1] / "data" / "bundled"
  paths = sorted((root / "att_faces").glob("s*/*.pgm"))
  x = np.stack(
    [np.asarray(Image.open(p).reduce(4), np.float32).ravel() for p in paths]
  )
  return x - x.mean(0)


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_sparse_jaccard_gives_the_dense_clusters_on_faces(backend, monkeypatch):
  if backend == "faiss":
    pytest.importorskip("faiss")
    monkeypatch.setattr(neighbors, "FAISS_MIN_PAIRS", 0)
  x = _att_faces()
  for k1, k2, eps in ((20, 6, 0.6), (10, 3, 0.6), (20, 6, 0.5)):
    dense = reranking.jaccard_distance(x, k1=k1, k2=k2)
    sparse = reranking.jaccard_distance(
      x, k1=k1, k2=k2, sparse=True, max_distance=eps + 0.02
    )
    assert sparse.nnz < 0.1 * dense.size
    for e in (eps - 0.02, eps, eps + 0.02):
      want = pseudo_labels.dbscan(dense, eps=e)
      np.testing.assert_array_equal(pseudo_labels.dbscan(sparse, eps=e), want)
    got, info = pseudo_labels.domainmix_pseudo_labels(x, k1=k1, k2=k2, eps=eps)
    want, want_info = pseudo_labels.reliable_pseudo_labels(dense, eps=eps)
    np.testing.assert_array_equal(got, want)
    assert info == want_info and info["num_clusters"] >= 10, info
    got, info = pseudo_labels.domainmix_pseudo_labels(
      x, k1=k1, k2=k2, eps=eps, sparse=False
    )
    np.testing.assert_array_equal(got, want)


def test_bad_input():
  with pytest.raises(ValueError, match="dist"):
    pseudo_labels.reliable_pseudo_labels(np.zeros((3, 4)))
  with pytest.raises(ValueError, match="dist"):
    pseudo_labels.dbscan(-np.ones((3, 3)))
  with pytest.raises(ValueError, match="dist"):
    pseudo_labels.dbscan(sp.csr_matrix(-np.ones((3, 3))))
  with pytest.raises(ValueError, match="square"):
    pseudo_labels.dbscan(sp.csr_matrix(np.ones((3, 4))))
  with pytest.raises(ValueError, match="features"):
    pseudo_labels.domainmix_pseudo_labels(np.zeros(5))

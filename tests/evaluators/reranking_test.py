"""k-reciprocal re-ranking against torchreid's re_ranking (the original code)
and Jaccard distances against a float64 loop written from the formula."""

import tracemalloc

import numpy as np
import pytest
from peers import peer_module

from idlearn.evaluators import neighbors, reid, reranking


def _torchreid_rerank():
  return peer_module("torchreid", "reid/utils/rerank.py").re_ranking


def _clusters(seed, nq=20, ng=80, nid=10, d=8, spread=1.0):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((nid, d)) * spread
  q_ids, g_ids = rng.integers(0, nid, nq), rng.integers(0, nid, ng)
  q = centres[q_ids] + rng.standard_normal((nq, d))
  g = centres[g_ids] + rng.standard_normal((ng, d))
  return q, q_ids, g, g_ids


def _euclid(a, b):
  return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_matches_torchreid(metric, monkeypatch):
  q, _, g, _ = _clusters(0)
  if metric == "cosine":
    q, g = _unit(q), _unit(g)
  blocks = _euclid(q, g), _euclid(q, q), _euclid(g, g)
  want = _torchreid_rerank()(*blocks, k1=20, k2=6, lambda_value=0.3)
  monkeypatch.setattr(reranking, "_CHUNK_ELEMENTS", 700)  # 7-row chunks
  monkeypatch.setattr(reranking, "_JACCARD_TERMS", 3000)  # and fewer
  monkeypatch.setattr(neighbors, "_CHUNK_ELEMENTS", 700)
  got = reranking.rerank_distances(*blocks)
  np.testing.assert_allclose(got, want, atol=2e-6)
  got = reranking.rerank(q * 3.0 if metric == "cosine" else q, g, metric=metric)
  np.testing.assert_allclose(got, want, atol=2e-6)
  want = _torchreid_rerank()(*blocks, k1=7, k2=1, lambda_value=0.5)
  got = reranking.rerank_distances(*blocks, k1=7, k2=1, lambda_value=0.5)
  np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_200x300_matches_torchreid_dense(backend, monkeypatch):
  # torchreid's re_ranking is the original dense code ((q + g)^2 matrices).
  if backend == "faiss":
    pytest.importorskip("faiss")
    monkeypatch.setattr(neighbors, "FAISS_MIN_PAIRS", 0)
  q, _, g, _ = _clusters(6, nq=200, ng=300, nid=40, d=32)
  blocks = _euclid(q, g), _euclid(q, q), _euclid(g, g)
  want = _torchreid_rerank()(*blocks, k1=20, k2=6, lambda_value=0.3)
  assert neighbors.choose_backend(500, 500) == backend
  np.testing.assert_allclose(reranking.rerank(q, g), want, atol=2e-6)


def test_smaller_than_k1_matches_torchreid():
  q, _, g, _ = _clusters(5, nq=3, ng=9)  # 12 entries < k1 + 1 = 21
  blocks = _euclid(q, g), _euclid(q, q), _euclid(g, g)
  want = _torchreid_rerank()(*blocks)
  np.testing.assert_allclose(reranking.rerank(q, g), want, atol=2e-6)


def test_k_reciprocal_neighbors_definition():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((30, 3))
  rank = np.argsort(_euclid(x, x), axis=1)
  got = reranking.k_reciprocal_neighbors(rank, 4).toarray()
  for i in range(30):
    want = [j for j in rank[i, :5] if i in rank[j, :5]]
    assert sorted(np.flatnonzero(got[i])) == sorted(want)


def ref_jaccard(x, k1, k2):
  """Loops: SpCL/DomainMix-style Jaccard distance on unit features."""
  x = _unit(x)
  d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
  n = len(x)
  rank = np.argsort(d2, axis=1, kind="stable")

  def recip(i, k):
    return {j for j in rank[i, : k + 1] if i in rank[j, : k + 1]}

  v = np.zeros((n, n))
  for i in range(n):
    r = recip(i, k1)
    ext = set(r)
    for j in r:
      h = recip(j, int(np.around(k1 / 2)))
      if len(h & r) > 2 / 3 * len(h):
        ext |= h
    ext = sorted(ext)
    w = np.exp(-d2[i, ext])
    v[i, ext] = w / w.sum()
  v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
  s = np.minimum(v[:, None], v[None]).sum(-1)
  return 1 - s / (2 - s)


def test_jaccard_distance_matches_formula(monkeypatch):
  monkeypatch.setattr(reranking, "_JACCARD_TERMS", 2000)  # several chunks
  x, _, _, _ = _clusters(2, nq=40, ng=0, nid=5, d=6)
  got = reranking.jaccard_distance(x, k1=6, k2=3)
  np.testing.assert_allclose(got, ref_jaccard(x, 6, 3), atol=1e-6)
  assert got.dtype == np.float32 and got.shape == (40, 40)


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_sparse_jaccard_equals_dense(backend, monkeypatch):
  if backend == "faiss":
    pytest.importorskip("faiss")
    monkeypatch.setattr(neighbors, "FAISS_MIN_PAIRS", 0)
  monkeypatch.setattr(reranking, "_JACCARD_TERMS", 5000)  # several chunks
  x, _, _, _ = _clusters(7, nq=300, ng=0, nid=30, d=16)
  dense = reranking.jaccard_distance(x, k1=20, k2=6)
  got = reranking.jaccard_distance(x, k1=20, k2=6, sparse=True)
  assert got.dtype == np.float32 and got.shape == (300, 300)
  full = np.ones((300, 300), np.float32)  # missing = no shared neighbour
  coo = got.tocoo()
  full[coo.row, coo.col] = coo.data
  np.testing.assert_array_equal(full, dense)
  assert got.nnz == np.sum(dense < 1)
  near = reranking.jaccard_distance(
    x, k1=20, k2=6, sparse=True, max_distance=0.6
  )
  np.testing.assert_array_equal(
    near.toarray() > 0, (dense <= 0.6) & (dense > 0)
  )
  assert near.nnz == np.sum(dense <= 0.6)  # zeros (the diagonal) are kept
  if backend == "exact":
    np.testing.assert_allclose(dense, ref_jaccard(x, 20, 6), atol=1e-6)


def test_sparse_jaccard_memory_grows_linearly(monkeypatch):
  # Within DBSCAN's radius, with small chunks: doubling n about doubles the
  # traced peak (measured 7.3 -> 15 MB), where a dense float32 [n, n]
  # would quadruple (16 -> 64 MB).
  for mod, name in (
    (reranking, "_CHUNK_ELEMENTS"),
    (reranking, "_JACCARD_TERMS"),
    (neighbors, "_CHUNK_ELEMENTS"),
  ):
    monkeypatch.setattr(mod, name, 1 << 16)
  peaks = []
  for n in (2000, 4000):
    x, _, _, _ = _clusters(8, nq=n, ng=0, nid=n // 10, d=16)
    tracemalloc.start()
    try:
      dist = reranking.jaccard_distance(x, sparse=True, max_distance=0.62)
      peaks.append(tracemalloc.get_traced_memory()[1])
    finally:
      tracemalloc.stop()
    assert dist.nnz < n * 10
  assert peaks[1] < 2.5 * peaks[0] and peaks[1] < 4000**2 * 4 / 3, peaks


def test_rerank_raises_map_on_separable_clusters():
  # Overlapping Gaussian identities (~20 gallery images each): a gallery
  # image's own neighbourhood votes for its identity, so mAP rises (seeds
  # 3, 4 here: 0.55 -> 0.77, 0.54 -> 0.78).
  q, q_ids, g, g_ids = _clusters(3, nq=60, ng=400, nid=20, d=16, spread=1.0)
  q_cams, g_cams = np.zeros(60, int), np.ones(400, int)
  plain = reid.evaluate(q, q_ids, q_cams, g, g_ids, g_cams, metric="euclidean")
  dist = reranking.rerank(q, g)
  ranked = reid.evaluate_distances(dist, q_ids, q_cams, g_ids, g_cams)
  assert 0.2 < plain["mAP"] < 0.8
  assert ranked["mAP"] > plain["mAP"] + 0.1


def test_bad_inputs():
  q, _, g, _ = _clusters(4)
  with pytest.raises(ValueError, match="q_q_dist"):
    reranking.rerank_distances(_euclid(q, g), _euclid(q, q)[1:], _euclid(g, g))
  bad = g.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="gallery_feats contains NaN"):
    reranking.rerank(q, bad)
  with pytest.raises(ValueError, match="features must be a non-empty"):
    reranking.jaccard_distance(np.zeros((0, 4)))
  with pytest.raises(ValueError, match="initial_rank"):
    reranking.k_reciprocal_neighbors(np.zeros((5, 2), int), 3)

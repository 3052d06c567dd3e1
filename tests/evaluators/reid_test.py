"""reid.evaluate against torchreid's evaluate_rank, a hand-computed case and a
straightforward float64 NumPy per-query loop."""

import jax.numpy as jnp
import numpy as np
import pytest
from peers import peer_module

from idlearn.evaluators import reid


def _torchreid_rank():
  """torchreid's metrics/rank.py, loaded from its file (`import torchreid`
  needs torchvision)."""
  return peer_module("torchreid", "reid/metrics/rank.py")


TR = _torchreid_rank()


def ref_metrics(dist, q_ids, q_cams, g_ids, g_cams, max_rank):
  """Per-query loop over a stable full argsort (ties by gallery index)."""
  cmcs, aps, inps = [], [], []
  for i in range(len(q_ids)):
    order = np.argsort(dist[i], kind="stable")
    keep = ~((g_ids[order] == q_ids[i]) & (g_cams[order] == q_cams[i]))
    hit = (g_ids[order] == q_ids[i])[keep].astype(np.float64)
    if not hit.any():
      continue
    cmcs.append(np.minimum(np.cumsum(hit), 1)[:max_rank])
    where = np.flatnonzero(hit)
    aps.append(np.mean(np.arange(1, len(where) + 1) / (where + 1)))
    inps.append(len(where) / (where[-1] + 1))
  return np.mean(cmcs, 0), np.mean(aps), np.mean(inps), len(aps)


def _problem(seed, nq=40, ng=200, nid=25, d=12, ncam=3, spread=1.0):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((nid + 3, d)) * spread
  q_ids = rng.integers(0, nid, nq)
  q_ids[:2] = nid + 2  # absent from some galleries -> skipped queries
  g_ids = rng.integers(0, nid + 2, ng)
  q = centres[q_ids] + rng.standard_normal((nq, d))
  g = centres[g_ids] + rng.standard_normal((ng, d))
  q_cams, g_cams = rng.integers(0, ncam, nq), rng.integers(0, ncam, ng)
  return q, q_ids, q_cams, g, g_ids, g_cams


def _dist(q, g, metric):
  if metric == "euclidean":
    return ((q[:, None] - g[None]) ** 2).sum(-1)
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  gn = g / np.linalg.norm(g, axis=1, keepdims=True)
  return 1.0 - qn @ gn.T


def test_hand_computed_case():
  # Query 0 (id 1, cam 0): g0 is removed (same id and camera); kept order
  # g1(id 2) g2(id 1) g3(id 3) g4(id 1) g5 -> matches at ranks 1 and 3:
  # AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4. Query 1 (id 3, cam 1): its only
  # gallery image g3 shares its camera -> skipped. Query 2 (id 2, cam 2):
  # matches g1, g5 first -> AP = INP = 1.
  dist = np.array(
    [
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
      [0.3, 0.1, 0.2, 0.4, 0.5, 0.6],
      [0.5, 0.05, 0.3, 0.2, 0.4, 0.1],
    ]
  )
  g_ids, g_cams = np.array([1, 2, 1, 3, 1, 2]), np.array([0, 1, 1, 1, 2, 0])
  out = reid.evaluate_distances(
    dist, [1, 3, 2], [0, 1, 2], g_ids, g_cams, max_rank=6
  )
  np.testing.assert_allclose(out["cmc"], [0.5, 1, 1, 1, 1, 1])
  assert out["mAP"] == pytest.approx(0.75)
  assert out["mINP"] == pytest.approx(0.75)
  assert (out["rank1"], out["rank5"]) == (0.5, 1.0)
  assert (out["num_valid_queries"], out["num_queries"]) == (2, 3)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_matches_torchreid_and_reference(metric):
  q, q_ids, q_cams, g, g_ids, g_cams = _problem(1)
  dist = _dist(q, g, metric)
  want_cmc, want_map = TR.evaluate_rank(
    dist, q_ids, g_ids, q_cams, g_cams, max_rank=20, use_cython=False
  )
  _, _, want_inp, n_valid = ref_metrics(dist, q_ids, q_cams, g_ids, g_cams, 20)
  got = reid.evaluate(
    q, q_ids, q_cams, g, g_ids, g_cams, metric=metric, max_rank=20
  )
  got_d = reid.evaluate_distances(
    dist, q_ids, q_cams, g_ids, g_cams, max_rank=20
  )
  assert 0.2 < want_map < 0.9  # neither trivial nor hopeless
  for out in (got, got_d):
    np.testing.assert_allclose(out["cmc"], want_cmc, atol=1e-6)
    assert out["mAP"] == pytest.approx(want_map, abs=1e-9)
    assert out["mINP"] == pytest.approx(want_inp, abs=1e-9)
    assert out["rank1"] == pytest.approx(want_cmc[0], abs=1e-6)
    assert out["rank10"] == pytest.approx(want_cmc[9], abs=1e-6)
    assert out["num_valid_queries"] == n_valid < len(q_ids)


def test_chunks_threads_and_jax_inputs(monkeypatch):
  q, q_ids, q_cams, g, g_ids, g_cams = _problem(2)
  want = reid.evaluate(q, q_ids, q_cams, g, g_ids, g_cams, num_threads=0)
  monkeypatch.setattr(reid, "_rows_per_chunk", lambda n_gallery: 3)
  args = [jnp.asarray(x) for x in (q, q_ids, q_cams, g, g_ids, g_cams)]
  got = reid.evaluate(*args, num_threads=3)
  np.testing.assert_allclose(got["cmc"], want["cmc"])
  assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-12)
  assert got["mINP"] == pytest.approx(want["mINP"], abs=1e-12)


def test_exact_ties_broken_by_gallery_index():
  rng = np.random.default_rng(3)
  dist = rng.integers(0, 4, (30, 60)).astype(np.float32)  # many ties
  q_ids, g_ids = rng.integers(0, 6, 30), rng.integers(0, 6, 60)
  q_cams, g_cams = rng.integers(0, 2, 30), rng.integers(0, 2, 60)
  cmc, ap, inp, n = ref_metrics(dist, q_ids, q_cams, g_ids, g_cams, 10)
  got = reid.evaluate_distances(dist, q_ids, q_cams, g_ids, g_cams, max_rank=10)
  np.testing.assert_allclose(got["cmc"], cmc)
  assert (got["mAP"], got["mINP"]) == pytest.approx((ap, inp), abs=1e-12)
  assert got["num_valid_queries"] == n


def test_exact_ties_in_few_candidate_rows():
  # Matches take integer distances 0..9 and so do ~50 other entries per
  # row: few candidates (compressed, not whole rows sorted), many ties.
  rng = np.random.default_rng(8)
  q_ids, g_ids = rng.integers(0, 100, 30), rng.integers(0, 100, 2000)
  q_cams, g_cams = rng.integers(0, 2, 30), rng.integers(0, 2, 2000)
  dist = rng.integers(0, 400, (30, 2000)).astype(np.float32)
  same = q_ids[:, None] == g_ids[None]
  dist[same] = rng.integers(0, 10, same.sum())
  cmc, ap, inp, n = ref_metrics(dist, q_ids, q_cams, g_ids, g_cams, 50)
  got = reid.evaluate_distances(dist, q_ids, q_cams, g_ids, g_cams)
  np.testing.assert_allclose(got["cmc"], cmc)
  assert (got["mAP"], got["mINP"]) == pytest.approx((ap, inp), abs=1e-12)
  assert got["num_valid_queries"] == n


def test_dense_candidates_path():
  # Hopeless features: each row's hardest match is deep, so rows take the
  # whole-row sort branch.
  q, q_ids, q_cams, g, g_ids, g_cams = _problem(4, spread=0.0)
  dist = _dist(q, g, "euclidean")
  cmc, ap, inp, _ = ref_metrics(dist, q_ids, q_cams, g_ids, g_cams, 50)
  got = reid.evaluate_distances(dist, q_ids, q_cams, g_ids, g_cams)
  np.testing.assert_allclose(got["cmc"], cmc)
  assert (got["mAP"], got["mINP"]) == pytest.approx((ap, inp), abs=1e-12)


def test_cuhk03_one_image_per_id_equals_market():
  # With one kept gallery image per id the single-shot draw is certain.
  rng = np.random.default_rng(5)
  g_ids = np.arange(30)
  q_ids, q_cams = rng.integers(0, 30, 20), np.zeros(20, int)
  dist = rng.random((20, 30))
  a = reid.evaluate_distances(dist, q_ids, q_cams, g_ids, np.ones(30))
  b = reid.evaluate_distances(
    dist, q_ids, q_cams, g_ids, np.ones(30), protocol="cuhk03"
  )
  np.testing.assert_allclose(a["cmc"], b["cmc"])


def test_cuhk03_hand_case_and_torchreid(monkeypatch):
  # Query id 1; gallery g0 (id 1, d .1), g1 (id 2, d .2), g2 (id 1, d .3).
  # A draw keeps g0 or g2 with probability 1/2: rank 1 or 2 -> rank1 = .5.
  out = reid.evaluate_distances(
    np.array([[0.1, 0.2, 0.3]]), [1], [0], [1, 2, 1], [1, 1, 1],
    max_rank=3, protocol="cuhk03", num_repeats=4000,
  )  # fmt: skip
  np.testing.assert_allclose(out["cmc"], [0.5, 1, 1], atol=0.03)
  assert out["mAP"] == pytest.approx((1 + 2 / 3) / 2)
  # torchreid draws with np.random (10 draws per call): average 30 calls.
  monkeypatch.setattr(np, "bool", bool, raising=False)  # removed in NumPy 2
  q, q_ids, q_cams, g, g_ids, g_cams = _problem(6, nq=15, ng=60, nid=8)
  dist = _dist(q, g, "euclidean")
  runs = []
  for s in range(30):
    np.random.seed(s)
    runs.append(TR.eval_cuhk03(dist, q_ids, g_ids, q_cams, g_cams, 10))
  got = reid.evaluate_distances(
    dist, q_ids, q_cams, g_ids, g_cams, max_rank=10, protocol="cuhk03",
    num_repeats=600,
  )  # fmt: skip
  np.testing.assert_allclose(got["cmc"], np.mean([r[0] for r in runs], 0),
                             atol=0.04)  # fmt: skip
  assert got["mAP"] == pytest.approx(runs[0][1], abs=1e-9)


def test_bad_inputs():
  q, q_ids, q_cams, g, g_ids, g_cams = _problem(7)
  with pytest.raises(ValueError, match="query_ids"):
    reid.evaluate(q, q_ids[:-1], q_cams, g, g_ids, g_cams)
  with pytest.raises(ValueError, match="gallery_cams"):
    reid.evaluate(q, q_ids, q_cams, g, g_ids, g_cams[1:])
  bad = g.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="gallery_feats.*NaN"):
    reid.evaluate(q, q_ids, q_cams, bad, g_ids, g_cams)
  with pytest.raises(ValueError, match="gallery_feats.*non-empty"):
    reid.evaluate(q, q_ids, q_cams, g[:0], g_ids[:0], g_cams[:0])
  with pytest.raises(ValueError, match="dim"):
    reid.evaluate(q, q_ids, q_cams, g[:, :5], g_ids, g_cams)
  with pytest.raises(ValueError, match="no query has a true match"):
    reid.evaluate(q, q_ids + 100, q_cams, g, g_ids, g_cams)
  with pytest.raises(ValueError, match="metric"):
    reid.evaluate(q, q_ids, q_cams, g, g_ids, g_cams, metric="l1")
  dist = _dist(q, g, "cosine")
  dist[2, 2] = np.nan
  with pytest.raises(ValueError, match="distances contains NaN"):
    reid.evaluate_distances(dist, q_ids, q_cams, g_ids, g_cams)

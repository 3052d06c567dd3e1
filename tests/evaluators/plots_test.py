"""plots: rankings against a brute-force loop, frame colours read back from
the drawn mosaic and the PNG, CMC line data, t-SNE neighbourhoods."""

import json

import numpy as np
import pytest
from PIL import Image

from idlearn.evaluators import plots, ranking, reid


def _reference_ranking(dist, qi, qc, gi, gc, k):
  """Per-query loop: keep entries not (same id and same cam), sort by
  (distance, index)."""
  index, first = [], []
  for q in range(len(qi)):
    kept = [
      g for g in range(len(gi)) if not (gi[g] == qi[q] and gc[g] == qc[q])
    ]
    kept.sort(key=lambda g: (dist[q, g], g))
    index.append((kept + [-1] * k)[:k])
    true = [r for r, g in enumerate(kept) if gi[g] == qi[q]]
    first.append(true[0] if true else -1)
  return np.array(index), np.array(first)


def _random_set(seed, n=30, d=5, ids=6):
  rng = np.random.default_rng(seed)
  return (
    rng.normal(size=(n, d)),
    rng.integers(0, ids, n),
    rng.integers(0, 2, n),
  )


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rank_gallery_matches_loop(metric):
  qf, qi, qc = _random_set(0, n=12)
  gf, gi, gc = _random_set(1, n=25)
  gi[0] = 99  # an id no query has
  qi[0], qc[0] = gi[3], gc[3]  # query 0 shares an id and cam with gallery 3
  k = 7
  r = plots.rank_gallery(qf, qi, qc, gf, gi, gc, metric=metric, top_k=k)
  if metric == "cosine":
    nq = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    ng = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    dist = 1 - nq @ ng.T
  else:
    dist = np.sqrt(((qf[:, None] - gf[None]) ** 2).sum(-1))
  want_index, want_first = _reference_ranking(dist, qi, qc, gi, gc, k)
  np.testing.assert_array_equal(r.index, want_index)
  np.testing.assert_array_equal(r.first_true, want_first)
  np.testing.assert_array_equal(r.correct, gi[want_index] == qi[:, None])
  rows = np.arange(len(qi))
  np.testing.assert_allclose(r.dist, dist[rows[:, None], want_index])


def test_rank_gallery_ties_and_chunks_match_loop(monkeypatch):
  # Integer features on a coarse grid: many equal distances, also at the
  # k-th place; 7 rows per chunk.
  rng = np.random.default_rng(5)
  qf, gf = rng.integers(0, 3, (20, 2)), rng.integers(0, 3, (40, 2))
  qi, qc = rng.integers(0, 4, 20), rng.integers(0, 2, 20)
  gi, gc = rng.integers(0, 4, 40), rng.integers(0, 2, 40)
  monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", 7 * 40)
  r = plots.rank_gallery(qf, qi, qc, gf, gi, gc, metric="euclidean", top_k=6)
  dist = np.sqrt(((qf[:, None] - gf[None]) ** 2).sum(-1))
  want_index, want_first = _reference_ranking(dist, qi, qc, gi, gc, 6)
  np.testing.assert_array_equal(r.index, want_index)
  np.testing.assert_array_equal(r.first_true, want_first)
  valid = want_first >= 0
  kept_true = [
    [g for g in range(40) if gi[g] == qi[q] and gc[g] != qc[q]]
    for q in range(20)
  ]
  for q in np.flatnonzero(valid):
    best = min(kept_true[q], key=lambda g: (dist[q, g], g))
    assert r.first_true_index[q] == best
    assert r.first_true_dist[q] == dist[q, best]
  assert (r.first_true_index[~valid] == -1).all()


def test_ranking_cmc_equals_reid_evaluate():
  qf, qi, qc = _random_set(2, n=40)
  r = plots.rank_gallery(qf, qi, qc, qf, qi, qc, top_k=5)
  valid = r.first_true >= 0
  cmc = (r.first_true[valid, None] < np.arange(1, 11)).mean(axis=0)
  want = reid.evaluate(qf, qi, qc, qf, qi, qc, max_rank=10)["cmc"]
  np.testing.assert_allclose(cmc, want)


def test_query_removed_when_query_is_gallery():
  qf, qi, qc = _random_set(3)
  r = plots.rank_gallery(qf, qi, qc, qf, qi, qc, top_k=30)
  assert not (r.index == np.arange(30)[:, None]).any()
  removed = ((qi[:, None] == qi[None]) & (qc[:, None] == qc[None])).sum(1)
  np.testing.assert_array_equal((r.index >= 0).sum(1), 30 - removed)
  assert np.isinf(r.dist[r.index < 0]).all()


def _known_case():
  """Query 0 (id 1, cam 0) against 6 gallery images at distances 1..6
  (euclidean on one feature): ids 1, 2, 1, 3, 3, 1 -> correct at ranks
  1 and 3 and 6; query 1 (id 3) has its matches at ranks 4 and 5."""
  rng = np.random.default_rng(0)
  query = {
    "image": rng.integers(0, 256, (2, 16, 8, 3), dtype=np.uint8),
    "id": np.array([1, 3]),
    "cam": np.array([0, 0]),
  }
  gallery = {
    "image": rng.integers(0, 256, (6, 16, 8, 3), dtype=np.uint8),
    "id": np.array([1, 2, 1, 3, 3, 1]),
    "cam": np.array([1, 1, 1, 1, 1, 1]),
  }
  qf = np.array([[0.0], [0.0]])
  gf = np.arange(1.0, 7.0)[:, None]
  return query, gallery, qf, gf


def _cell(mosaic_shape, r, c, s, h, w, border, top=0):
  ch, cw = s * h + 2 * border, s * w + 2 * border
  y = top + r * (ch + plots.TITLE_PX + plots.GAP_PX) + plots.TITLE_PX
  return y, c * (cw + plots.GAP_PX), ch, cw


def test_retrieval_grid_frames_from_known_ids(tmp_path):
  query, gallery, qf, gf = _known_case()
  r = plots.rank_gallery(
    qf, query["id"], query["cam"], gf, gallery["id"], gallery["cam"],
    metric="euclidean", top_k=5,
  )  # fmt: skip
  border, s = 3, 8  # 16-row images upscaled 8x to min_height=128
  fig = plots.retrieval_grid(
    query["image"], gallery["image"], r, [0, 1], border=border,
    query_ids=query["id"], gallery_ids=gallery["id"],
  )  # fmt: skip
  mosaic = np.asarray(fig.axes[0].images[0].get_array())
  assert mosaic.shape == (2 * (134 + 26 + 6), 6 * (64 + 6 + 6), 3)
  fig.savefig(tmp_path / "grid.png")
  png = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
  assert png.shape == mosaic.shape  # one figure pixel per mosaic pixel
  want = {
    0: ["grey", "g", "r", "g", "r", "r"],
    1: ["grey", "r", "r", "r", "g", "g"],
  }
  colors = {"grey": plots.GREY, "g": plots.GREEN, "r": plots.RED}
  for row, names in want.items():
    for c, name in enumerate(names):
      y, x, ch, cw = _cell(mosaic.shape, row, c, s, 16, 8, border)
      for img in (mosaic, png):
        frame = np.concatenate(
          [img[y, x : x + cw], img[y + ch - 1, x : x + cw]]
        )  # top and bottom frame rows
        assert (frame == colors[name]).all(), (row, c, name)
      inner = mosaic[y + border : y + ch - border, x + border : x + cw - border]
      src = (
        query["image"][row] if c == 0 else gallery["image"][r.index[row, c - 1]]
      )
      np.testing.assert_array_equal(inner, src.repeat(s, 0).repeat(s, 1))


def test_failures_and_first_true_column():
  query, gallery, qf, gf = _known_case()
  r = plots.rank_gallery(
    qf, query["id"], query["cam"], gf, gallery["id"], gallery["cam"],
    metric="euclidean", top_k=2,
  )  # fmt: skip
  # Query 0 is right at rank 1; query 1's true match is at distance 4
  # against a wrong rank-1 at distance 1: gap 3.
  np.testing.assert_array_equal(plots.hardest_failures(r, 5), [1])
  assert r.first_true[1] == 3 and r.first_true_index[1] == 3
  fig = plots.retrieval_grid(
    query["image"], gallery["image"], r, [1], show_first_true=True,
    border=2, min_height=16,
  )  # fmt: skip
  mosaic = np.asarray(fig.axes[0].images[0].get_array())
  y, x, ch, cw = _cell(mosaic.shape, 0, 3, 1, 16, 8, 2)
  assert (mosaic[y, x : x + cw] == plots.BLUE).all()
  np.testing.assert_array_equal(
    mosaic[y + 2 : y + ch - 2, x + 2 : x + cw - 2], gallery["image"][3]
  )


def test_hardest_failures_sorted_by_gap():
  # 3 queries (ids 0, 1, 2) vs gallery on a line; gaps 0.5, 2.0, none.
  gf = np.array([[0.0], [0.5], [10.0], [12.0], [20.0]])
  gi = np.array([5, 0, 6, 1, 2])
  qf = np.array([[0.0], [10.0], [20.0]])
  r = plots.rank_gallery(
    qf, [0, 1, 2], [0, 0, 0], gf, gi, np.ones(5), metric="euclidean"
  )
  np.testing.assert_array_equal(plots.hardest_failures(r, 3), [1, 0])


def test_pick_queries_distinct_ids_with_matches():
  qf, qi, qc = _random_set(4, n=40, ids=8)
  r = plots.rank_gallery(qf, qi, qc, qf, qi, qc)
  picked = plots.pick_queries(r, qi, 5, seed=1)
  assert len(picked) == 5 and len(set(qi[picked])) == 5
  assert (r.first_true[picked] >= 0).all()
  np.testing.assert_array_equal(picked, plots.pick_queries(r, qi, 5, seed=1))


def test_cmc_plot_reads_back_input():
  a = np.linspace(0.3, 1.0, 30)
  b = np.linspace(0.1, 0.9, 30)
  fig = plots.plot_cmc({"trained": a, "untrained": b}, max_rank=20)
  lines = fig.axes[0].lines
  assert len(lines) == 2
  np.testing.assert_array_equal(lines[0].get_xdata(), np.arange(1, 21))
  np.testing.assert_allclose(lines[0].get_ydata(), 100 * a[:20])
  np.testing.assert_allclose(lines[1].get_ydata(), 100 * b[:20])
  assert lines[0].get_label() == "trained rank-1 30.0%"


def _clusters(n_per=12, k=4, d=16, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, d)) * 4
  x = np.repeat(centres, n_per, axis=0) + rng.normal(size=(k * n_per, d))
  return x, np.repeat(np.arange(k), n_per)


def test_tsne_keeps_separable_clusters():
  from sklearn.manifold import trustworthiness

  x, ids = _clusters()
  pts = plots.embed_2d(x, metric="euclidean", perplexity=10)
  assert pts.shape == (48, 2)
  d = ((pts[:, None] - pts[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  assert (ids[d.argmin(1)] == ids).all()  # 1-NN in the map keeps the id
  assert trustworthiness(x, pts, n_neighbors=5) > 0.9


def test_tsne_cosine_ignores_feature_scale():
  x, _ = _clusters(n_per=5, seed=1)
  scale = np.random.default_rng(0).uniform(0.5, 3.0, (len(x), 1))
  a = plots.embed_2d(x, perplexity=5)
  b = plots.embed_2d(x * scale, perplexity=5)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_embedding_map_points_and_identity_colours():
  pts = np.random.default_rng(0).normal(size=(9, 2))
  ids = np.array([4, 4, 7, 7, 7, 9, 9, 4, 9])
  images = np.zeros((9, 16, 8, 3), np.uint8)
  fig = plots.embedding_map(pts, ids, images=images)
  coll = fig.axes[0].collections[0]
  np.testing.assert_allclose(coll.get_offsets(), pts)
  colors = coll.get_facecolors()
  for i in range(9):
    for j in range(9):
      assert np.allclose(colors[i], colors[j]) == (ids[i] == ids[j])


def test_read_metrics_later_duplicate_wins_and_curve(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [
    {"step": 1, "train/loss": 3.0},
    {"step": 2, "train/loss": 2.5},
    {"step": 2, "train/loss": 2.4, "eval/x/rank1": 0.5},  # resumed run
    {"step": 3, "train/loss": 2.0},
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  m = plots.read_metrics(path)
  np.testing.assert_array_equal(m["train/loss"][0], [1, 2, 3])
  np.testing.assert_array_equal(m["train/loss"][1], [3.0, 2.4, 2.0])
  np.testing.assert_array_equal(m["eval/x/rank1"][0], [2])
  line = plots.plot_curves(m).axes[0].lines[0]
  np.testing.assert_array_equal(line.get_ydata(), [3.0, 2.4, 2.0])
  with pytest.raises(ValueError, match="not in metrics"):
    plots.plot_curves(m, keys=("train/acc",))


def test_write_eval_pictures(tmp_path):
  query, gallery, qf, gf = _known_case()
  cmc = reid.evaluate(
    qf, query["id"], query["cam"], gf, gallery["id"], gallery["cam"],
    metric="euclidean", max_rank=6,
  )["cmc"]  # fmt: skip
  paths = plots.write_eval_pictures(
    tmp_path / "out", query, gallery, qf, gf, metric="euclidean", top_k=4,
    num_queries=2,
  )  # fmt: skip
  assert sorted(paths) == ["cmc", "failure_cases", "retrieval_grid"]
  grid = Image.open(paths["retrieval_grid"])
  title = plots.TITLE_PX
  assert grid.size == (5 * (64 + 8 + 6), title + 2 * (128 + 8 + 26 + 6))
  fail = Image.open(paths["failure_cases"])
  assert fail.size == (6 * (64 + 8 + 6), title + 1 * (128 + 8 + 26 + 6))
  assert Image.open(paths["cmc"]).size == (500, 360)
  np.testing.assert_allclose(cmc, [0.5, 0.5, 0.5, 1, 1, 1])


@pytest.mark.parametrize(
  "call,match",
  [
    (lambda: plots.distances(np.ones((2, 3)), np.ones((2, 4))), "gallery_f"),
    (lambda: plots.distances(np.ones((2, 3)), np.ones((2, 3)), metric="l1"),
     "metric"),
    (lambda: plots.embed_2d(np.ones((3, 2))), "n >= 4"),
    (lambda: plots.retrieval_grid(np.ones((1, 4, 4, 3)),
                                  np.ones((1, 4, 4, 3)), None, [0]), "uint8"),
    (lambda: plots.plot_cmc(np.ones((2, 3))), "1-D"),
  ],
)  # fmt: skip
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()

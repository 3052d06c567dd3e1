"""Ranked galleries: the top-k gallery entries of each query, and which
queries to show.

Rankings follow the Market-1501 protocol of `reid.evaluate`: gallery entries
with the query's id *and* camera are removed (this drops the query itself
when query and gallery are the same set). `plots.retrieval_grid` draws
them.
"""

from typing import Any, NamedTuple

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # distances per query chunk in rank_gallery


class Ranking(NamedTuple):
  """Top-k gallery entries per query after the Market-1501 removal.

  index: [q, k] gallery indices, nearest first; -1 past the kept gallery.
  dist: [q, k] their distances (inf where index is -1).
  correct: [q, k] gallery id == query id.
  first_true: [q] 0-based rank of the nearest true match in the whole kept
    gallery (-1: none left).
  first_true_index: [q] its gallery index (-1: none).
  first_true_dist: [q] its distance (inf: none).
  """

  index: np.ndarray
  dist: np.ndarray
  correct: np.ndarray
  first_true: np.ndarray
  first_true_index: np.ndarray
  first_true_dist: np.ndarray


def distances(
  query_feats: Any, gallery_feats: Any, *, metric: str = "cosine"
) -> np.ndarray:
  """[q, d], [g, d] features -> [q, g] float64 distances (smaller = closer).

  "cosine" gives 1 - cos (features L2-normalised), "euclidean" the L2
  distance.
  """
  q = np.asarray(query_feats, np.float64)
  g = np.asarray(gallery_feats, np.float64)
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise ValueError(
      f"query_feats and gallery_feats must be [q, d] and [g, d], got "
      f"{q.shape} and {g.shape}"
    )
  if metric == "cosine":
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ g.T
  if metric == "euclidean":
    sq = (q**2).sum(1)[:, None] + (g**2).sum(1)[None] - 2 * q @ g.T
    return np.sqrt(np.maximum(sq, 0.0))
  raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def rank_gallery(
  query_feats: Any,
  query_ids: Any,
  query_cams: Any,
  gallery_feats: Any,
  gallery_ids: Any,
  gallery_cams: Any,
  *,
  metric: str = "cosine",
  top_k: int = 10,
) -> Ranking:
  """Ranks the gallery for every query, keeping the top `top_k`.

  Queries are processed in row chunks (about 32 MiB of distances each) and
  only the top entries are sorted, so a Market-1501-sized set (3k x 16k)
  takes seconds.

  Args:
    query_feats: [q, d] features; query_ids, query_cams: [q] labels.
    gallery_feats: [g, d]; gallery_ids, gallery_cams: [g] labels.
    metric: "cosine" or "euclidean" (as `reid.evaluate`).
    top_k: entries kept per query.
  Returns:
    A `Ranking`; ties are broken by gallery index.
  """
  qf, gf = np.asarray(query_feats), np.asarray(gallery_feats)
  qi, qc = np.asarray(query_ids), np.asarray(query_cams)
  gi, gc = np.asarray(gallery_ids), np.asarray(gallery_cams)
  if qi.shape != (len(qf),) or qc.shape != qi.shape:
    raise ValueError(f"query_ids/query_cams must have shape ({len(qf)},)")
  if gi.shape != (len(gf),) or gc.shape != gi.shape:
    raise ValueError(f"gallery_ids/gallery_cams must have shape ({len(gf)},)")
  if not len(gf) or top_k < 1:
    raise ValueError(
      f"need a non-empty gallery and top_k >= 1, got {len(gf)} gallery "
      f"entries and top_k={top_k}"
    )
  k = min(top_k, len(gf))
  chunk = max(1, _CHUNK_ELEMENTS // len(gf))
  parts = [
    _rank_chunk(
      distances(qf[i : i + chunk], gf, metric=metric),
      qi[i : i + chunk], qc[i : i + chunk], gi, gc, k,
    )
    for i in range(0, len(qf), chunk)
  ]  # fmt: skip
  return Ranking(*(np.concatenate(p) for p in zip(*parts, strict=True)))


def _rank_chunk(dist, qi, qc, gi, gc, k) -> Ranking:
  """Ranking of one query chunk from its [c, g] distances."""
  same_id = qi[:, None] == gi[None]  # [c, g]
  dist[same_id & (qc[:, None] == gc[None])] = np.inf  # removed entries
  cols = np.arange(dist.shape[1])
  # Nearest true match: lowest distance, then lowest index (argmin's rule).
  true_dist = np.where(same_id, dist, np.inf)
  first_index = true_dist.argmin(axis=1)  # [c]
  rows = np.arange(len(qi))
  first_dist = true_dist[rows, first_index]
  # Its rank: kept entries ordered before it by (distance, index).
  d, ix = first_dist[:, None], first_index[:, None]
  first = ((dist < d) | ((dist == d) & (cols < ix))).sum(axis=1)
  none = ~np.isfinite(first_dist)
  first[none], first_index[none] = -1, -1
  # Top k: partition, then sort the k by (distance, index); rows with ties
  # at the k-th distance take the full stable sort instead.
  cand = np.argpartition(dist, k - 1, axis=1)[:, :k]  # [c, k]
  cand_dist = np.take_along_axis(dist, cand, axis=1)
  kth = cand_dist.max(axis=1, keepdims=True)
  exact = (dist == kth).sum(1) == (cand_dist == kth).sum(1)
  order = np.lexsort((cand, cand_dist), axis=1)
  index = np.take_along_axis(cand, order, axis=1)
  for r in np.flatnonzero(~exact):
    index[r] = np.argsort(dist[r], kind="stable")[:k]
  top_dist = np.take_along_axis(dist, index, axis=1)
  index = np.where(np.isfinite(top_dist), index, -1)
  correct = (gi[index] == qi[:, None]) & (index >= 0)
  return Ranking(index, top_dist, correct, first, first_index, first_dist)


def pick_queries(
  ranking: Ranking, query_ids: Any, num: int, *, seed: int = 0
) -> np.ndarray:
  """`num` queries with a true match left, distinct ids where possible.

  Returns: int [<= num] query indices, seeded (same picture every run).
  """
  ids = np.asarray(query_ids)
  valid = np.flatnonzero(ranking.first_true >= 0)
  rng = np.random.default_rng(seed)
  valid = valid[rng.permutation(len(valid))]
  _, first = np.unique(ids[valid], return_index=True)  # one per identity
  picked = valid[np.sort(first)][:num]
  if len(picked) < num:  # fewer ids than rows: fill with other queries
    rest = np.setdiff1d(valid, picked, assume_unique=True)
    picked = np.concatenate([picked, rest[: num - len(picked)]])
  return picked


def hardest_failures(ranking: Ranking, num: int) -> np.ndarray:
  """Queries whose rank-1 match is wrong, worst first.

  Worst = the largest gap between the nearest true match and the (wrong)
  rank-1 entry, i.e. how far the model prefers a wrong identity.
  Returns: int [<= num] query indices.
  """
  wrong = np.flatnonzero((ranking.first_true > 0) & ~ranking.correct[:, 0])
  gap = ranking.first_true_dist[wrong] - ranking.dist[wrong, 0]
  return wrong[np.argsort(-gap, kind="stable")][:num]

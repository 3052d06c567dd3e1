"""Re-ID retrieval metrics (CMC, mAP, mINP) under the field's protocols.

Market-1501 protocol (Zheng et al. 2015, as in torchreid's `evaluate_rank`):
for each query, gallery entries with the same id *and* the same camera are
removed; a query with no remaining true match is skipped (and counted); the
CMC curve marks the rank of the first true match and AP averages the
precision at every true match. mINP (Ye et al. 2021) is `m / (R + 1)` with m
true matches and R the 0-based rank of the hardest one.

Speed and memory: the query set is processed in row chunks; each chunk's
distances are one float32 matmul, and threads rank a chunk while the next
one's matmul runs. A true match's rank is the number of kept gallery
entries closer than it, and only entries no farther than the query's
hardest true match can be closer, so a row keeps and sorts just those
candidates (few for a useful model; a row with many is sorted whole).
Memory is a few chunks of distances plus the features, independent of the
query count. Ties in distance are broken by gallery index (as a stable sort
would).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Any, NamedTuple

import numpy as np

# Distances per chunk (float32: 32 MiB); num_threads + 1 chunks at a time.
_CHUNK_ELEMENTS = 1 << 23
_PROTOCOLS = ("market1501", "cuhk03")


class _Gallery(NamedTuple):
  """Gallery indices grouped by id: a query's true matches are one slice."""

  order: np.ndarray  # [g] gallery indices sorted by (id, index)
  ids: np.ndarray  # [u] sorted unique ids
  starts: np.ndarray  # [u] first position of each id in `order`
  counts: np.ndarray  # [u] entries per id
  cams: np.ndarray  # [g]


def _index_gallery(ids: np.ndarray, cams: np.ndarray) -> _Gallery:
  order = np.argsort(ids, kind="stable")
  uniq, starts, counts = np.unique(
    ids[order], return_index=True, return_counts=True
  )
  return _Gallery(order, uniq, starts, counts, cams)


def _labels(x: Any, name: str, n: int | None = None) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
  if n is not None and len(x) != n:
    raise ValueError(f"{name} has length {len(x)}, expected {n}")
  return x


def _features(x: Any, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty [n, d] array, got {x.shape}")
  if not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name} contains NaN or infinite values")
  return x


def _sgs_cmc(row, seg, removed_cols, gal, rng, num_repeats, max_rank):
  """CUHK03 single-gallery-shot CMC of one query, averaged over draws.

  Each draw keeps one random kept entry per gallery id (torchreid's
  `eval_cuhk03` does the same with 10 draws); `seg` is the query id's slice
  of `gal.order`.
  Returns: [max_rank] float64.
  """
  g = len(row)
  pos = np.empty(g, np.int64)
  pos[np.argsort(row, kind="stable")] = np.arange(g)
  u = rng.random((num_repeats, g))
  u[:, removed_cols] = -1.0
  us = u[:, gal.order]  # [r, g] grouped by id
  best = np.maximum.reduceat(us, gal.starts, axis=1)  # [r, u]
  picked = (us == np.repeat(best, gal.counts, axis=1)) & (us >= 0)
  ps = pos[gal.order]
  true_pos = np.where(picked[:, seg], ps[seg], g).min(axis=1)  # [r]
  rank = np.count_nonzero(picked & (ps < true_pos[:, None]), axis=1)
  return (rank[:, None] <= np.arange(max_rank)[None]).mean(axis=0)


def _same_id_entries(dist, q_ids, q_cams, gal):
  """Gallery entries sharing each query's id, sorted by (row, dist, index).

  Returns: rows, cols, vals, removed (same camera too), each [s].
  """
  loc = np.minimum(np.searchsorted(gal.ids, q_ids), len(gal.ids) - 1)
  cnt = np.where(gal.ids[loc] == q_ids, gal.counts[loc], 0)
  rows = np.repeat(np.arange(len(q_ids)), cnt)
  within = np.arange(len(rows)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
  cols = gal.order[np.repeat(gal.starts[loc], cnt) + within]
  vals = dist[rows, cols]
  o = np.lexsort((cols, vals, rows))
  rows, cols, vals = rows[o], cols[o], vals[o]
  return rows, cols, vals, gal.cams[cols] == q_cams[rows]


def _kept_ranks(dist, rows, cols, vals, removed):
  """0-based ranks of the kept true matches among the kept gallery.

  A match's rank is the number of kept entries closer than it (equal
  distance: lower index first). Only entries no farther than a row's
  hardest match can be closer, so each row sorts just those.
  Args: as returned by `_same_id_entries`.
  Returns: rows [m], ranks [m] for the kept matches, ascending per row.
  """
  g = dist.shape[1]
  # Removed (same id, same camera) entries closer than each entry.
  seen = np.cumsum(removed) - removed
  starts = np.searchsorted(rows, rows)
  rem_before = seen - seen[starts]
  keep = ~removed
  rows, cols, vals, rem_before = (
    rows[keep],
    cols[keep],
    vals[keep],
    rem_before[keep],
  )
  ranks = np.empty(len(rows), np.int64)
  bounds = np.flatnonzero(np.diff(rows, prepend=-1, append=-2))
  for a, b in zip(bounds[:-1], bounds[1:], strict=True):
    row, pv = dist[rows[a]], vals[a:b]
    mask = row <= pv[-1]
    # A dense candidate set is cheaper to sort whole than to compress.
    cand = row.copy() if 4 * np.count_nonzero(mask) > g else row[mask]
    cand.sort()
    less = np.searchsorted(cand, pv, "left")
    ties = np.searchsorted(cand, pv, "right") - less > 1
    for t in np.flatnonzero(ties):  # rare: exactly equal distances
      less[t] += np.count_nonzero(row[: cols[a + t]] == pv[t])
    ranks[a:b] = less
  return rows, ranks - rem_before


def _chunk_metrics(dist, q_ids, q_cams, gal, max_rank, sgs):
  """Per-query first-match rank, AP, INP (and SGS CMC) of a [c, g] chunk.

  Returns: first [c] (-1: no kept true match), ap [c], inp [c], and the
  single-gallery-shot CMC [c, max_rank] or None.
  """
  c = dist.shape[0]
  same = _same_id_entries(dist, q_ids, q_cams, gal)
  rows, ranks = _kept_ranks(dist, *same)
  m = np.bincount(rows, minlength=c)
  valid = m > 0
  seg = np.cumsum(m) - m  # first kept match of each row
  k = np.arange(len(rows)) - seg[rows] + 1  # 1-based index among matches
  first = np.full(c, -1, np.int64)
  first[valid] = ranks[seg[valid]]
  ap = np.bincount(rows, k / (ranks + 1.0), minlength=c) / np.maximum(m, 1)
  inp = np.zeros(c)
  inp[valid] = m[valid] / (ranks[seg[valid] + m[valid] - 1] + 1.0)
  cmc = None
  if sgs is not None:
    rng, repeats = sgs
    cmc = np.zeros((c, max_rank))
    loc = np.searchsorted(gal.ids, q_ids)
    for r in np.flatnonzero(valid):
      s = slice(gal.starts[loc[r]], gal.starts[loc[r]] + gal.counts[loc[r]])
      gone = same[1][(same[0] == r) & same[3]]
      cmc[r] = _sgs_cmc(dist[r], s, gone, gal, rng, repeats, max_rank)
  return first, ap, inp, cmc


def _summarise(parts, max_rank, out_rank):
  first = np.concatenate([p[0] for p in parts])
  valid = first >= 0
  n = int(valid.sum())
  if n == 0:
    raise ValueError(
      "no query has a true match in the gallery after removing same-id "
      "same-camera entries: check query_ids/gallery_ids and the cams"
    )
  ap = np.concatenate([p[1] for p in parts])[valid]
  inp = np.concatenate([p[2] for p in parts])[valid]
  if parts[0][3] is not None:  # single-gallery-shot CMC
    cmc = np.concatenate([p[3] for p in parts])[valid].mean(axis=0)
  else:
    hits = np.bincount(first[valid], minlength=max_rank)[:max_rank]
    cmc = np.cumsum(hits) / n
  return {
    "cmc": cmc[:out_rank].astype(np.float64),
    "rank1": float(cmc[0]),
    "rank5": float(cmc[4]),
    "rank10": float(cmc[9]),
    "mAP": float(ap.mean()),
    "mINP": float(inp.mean()),
    "num_valid_queries": n,
    "num_queries": len(first),
  }


def _run(dist_fn, rank_fn, n_rows, rows_per_chunk, num_threads):
  """Pipelines chunks: distances one chunk at a time, ranking in threads.

  Only one distance matmul runs at a time (BLAS threads it over all cores);
  NumPy releases the GIL, so ranking threads overlap it. At most
  num_threads + 1 chunks are alive, which bounds memory.
  """
  bounds = [
    (i, min(i + rows_per_chunk, n_rows))
    for i in range(0, n_rows, rows_per_chunk)
  ]
  if num_threads <= 0:
    return [rank_fn(i, j, dist_fn(i, j)) for i, j in bounds]
  out, pending = [], collections.deque()
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    for i, j in bounds:
      pending.append(pool.submit(rank_fn, i, j, dist_fn(i, j)))
      while len(pending) > num_threads:
        out.append(pending.popleft().result())
    out.extend(f.result() for f in pending)
  return out


def _check_options(metric, max_rank, protocol):
  if metric not in ("cosine", "euclidean"):
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
  if max_rank < 1:
    raise ValueError(f"max_rank must be >= 1, got {max_rank}")
  if protocol not in _PROTOCOLS:
    raise ValueError(f"protocol must be one of {_PROTOCOLS}, got {protocol!r}")


def _threads(num_threads):
  if num_threads is None:  # BLAS already uses every core for the matmuls
    return min(4, max(1, (os.cpu_count() or 1) // 2))
  return num_threads


def _rows_per_chunk(n_gallery):
  # >= 256 rows keeps the matmul compute-bound (the gallery is re-read once
  # per chunk); otherwise ~_CHUNK_ELEMENTS distances per chunk.
  return max(256, _CHUNK_ELEMENTS // n_gallery)


def _l2_normalize(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
  x = np.asarray(x, np.float32)
  norm = np.sqrt(np.einsum("nd,nd->n", x, x))[:, None]
  return x / (np.maximum(norm, np.float32(1e-12)) / np.float32(scale))


def evaluate(
  query_feats: Any,
  query_ids: Any,
  query_cams: Any,
  gallery_feats: Any,
  gallery_ids: Any,
  gallery_cams: Any,
  *,
  metric: str = "cosine",
  max_rank: int = 50,
  protocol: str = "market1501",
  num_repeats: int = 10,
  seed: int = 0,
  num_threads: int | None = None,
) -> dict[str, Any]:
  """Retrieval metrics of query features against a gallery.

  Args:
    query_feats: [q, d] features (NumPy or JAX), finite.
    query_ids, query_cams: [q] identity and camera labels.
    gallery_feats: [g, d] features.
    gallery_ids, gallery_cams: [g] labels. Drop Market-1501 junk images
      (id -1) before calling, as torchreid's loader does.
    metric: "cosine" (features L2-normalised) or "euclidean".
    max_rank: length of the returned CMC curve.
    protocol: "market1501", or "cuhk03" for the single-gallery-shot CMC
      (one random kept image per gallery id, averaged over `num_repeats`
      draws from `seed`); AP and INP always use the whole kept gallery.
    num_threads: threads ranking query chunks while the next chunk's
      distances are computed (default: cores // 2, in [1, 4]; 0: no
      threads).

  Returns:
    dict with "cmc" [max_rank] float64, floats "rank1", "rank5", "rank10",
    "mAP", "mINP" (in [0, 1], averaged over the valid queries), and ints
    "num_valid_queries" (queries with a true match left) and "num_queries".
  """
  _check_options(metric, max_rank, protocol)
  q = _features(query_feats, "query_feats")
  g = _features(gallery_feats, "gallery_feats")
  if q.shape[1] != g.shape[1]:
    raise ValueError(
      f"query_feats has dim {q.shape[1]} but gallery_feats has {g.shape[1]}"
    )
  q_ids = _labels(query_ids, "query_ids", len(q))
  q_cams = _labels(query_cams, "query_cams", len(q))
  gal = _index_gallery(
    _labels(gallery_ids, "gallery_ids", len(g)),
    _labels(gallery_cams, "gallery_cams", len(g)),
  )
  if metric == "cosine":  # rank by -cos: the matmul gives it directly
    qa, g, bias = _l2_normalize(q, -1.0), _l2_normalize(g), None
  else:  # |q|^2 is constant per row, so rank by |g|^2 - 2 q.g
    qa, g = -2.0 * q.astype(np.float32), g.astype(np.float32)
    bias = np.einsum("nd,nd->n", g, g)
  out_rank, max_rank = max_rank, max(max_rank, 10)

  def dist(i, j):
    d = qa[i:j] @ g.T  # [c, g] float32
    if bias is not None:
      d += bias
    return d

  def rank(i, j, d):
    sgs = _sgs(protocol, seed, i, num_repeats)
    return _chunk_metrics(d, q_ids[i:j], q_cams[i:j], gal, max_rank, sgs)

  rows = _rows_per_chunk(len(g))
  parts = _run(dist, rank, len(q), rows, _threads(num_threads))
  return _summarise(parts, max_rank, out_rank)


def evaluate_distances(
  distances: Any,
  query_ids: Any,
  query_cams: Any,
  gallery_ids: Any,
  gallery_cams: Any,
  *,
  max_rank: int = 50,
  protocol: str = "market1501",
  num_repeats: int = 10,
  seed: int = 0,
  num_threads: int | None = None,
) -> dict[str, Any]:
  """As `evaluate`, from a precomputed [q, g] distance matrix.

  Use this after re-ranking (`reranking.rerank`) or for any custom distance;
  smaller is closer. The matrix is read in row chunks and never copied whole
  (a `np.memmap` works).

  Args:
    distances: [q, g] distances, no NaN.
    query_ids, query_cams, gallery_ids, gallery_cams, max_rank, protocol,
    num_repeats, seed, num_threads: as in `evaluate`.

  Returns: the same dict as `evaluate`.
  """
  _check_options("cosine", max_rank, protocol)
  if not hasattr(distances, "shape") or len(distances.shape) != 2:
    raise ValueError("distances must be a 2-D [q, g] array")
  nq, ng = distances.shape
  if nq == 0 or ng == 0:
    raise ValueError(f"distances must be non-empty, got shape {(nq, ng)}")
  q_ids = _labels(query_ids, "query_ids", nq)
  q_cams = _labels(query_cams, "query_cams", nq)
  gal = _index_gallery(
    _labels(gallery_ids, "gallery_ids", ng),
    _labels(gallery_cams, "gallery_cams", ng),
  )
  out_rank, max_rank = max_rank, max(max_rank, 10)

  def dist(i, j):
    d = np.asarray(distances[i:j])
    if np.isnan(d).any():
      raise ValueError(f"distances contains NaN (rows {i}..{j - 1})")
    return d

  def rank(i, j, d):
    sgs = _sgs(protocol, seed, i, num_repeats)
    return _chunk_metrics(d, q_ids[i:j], q_cams[i:j], gal, max_rank, sgs)

  rows = _rows_per_chunk(ng)
  parts = _run(dist, rank, nq, rows, _threads(num_threads))
  return _summarise(parts, max_rank, out_rank)


def _sgs(protocol, seed, first_row, num_repeats):
  if protocol != "cuhk03":
    return None
  # Seeded per chunk, so results do not depend on the thread schedule.
  return np.random.default_rng([seed, first_row]), num_repeats

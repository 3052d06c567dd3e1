"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) and Jaccard distances.

For a pooled set (queries + gallery, or one unlabelled set), with d(i, j)
the base distance:
  N(i, k)   the k + 1 nearest entries of i (i itself first);
  R(i, k)   = {j in N(i, k) : i in N(j, k)}, the k-reciprocal neighbours;
  R*(i)     = R(i, k1) plus R(j, k1/2) of every j in R(i, k1) that shares
              more than 2/3 of its R(j, k1/2) with R(i, k1);
  V[i, j]   = exp(-d'(i, j)) / sum_{l in R*(i)} exp(-d'(i, l)) on R*(i),
              with d' = d^2 / max_l d(i, l)^2 (re-ranking, as the original
              code) or d' = d^2 on unit features (`jaccard_distance`);
  V         <- mean of V over each row's k2 nearest entries (query expansion);
  d_J(i, j) = 1 - s / (2 - s), s = sum_l min(V[i, l], V[j, l]);
  final     = (1 - lambda) d_J + lambda d' (re-ranking only).

Everything but the output is sparse: each row of V only holds its expanded
set R*(i) (nnz ~ n * k1), N(i, k) comes from `neighbors.search` (exact
below a size threshold, faiss above it), d' is computed for the stored
pairs only, and d_J is made in row chunks. Memory is O(n k1) plus the
output: [q, g] for re-ranking, and for `jaccard_distance(sparse=True)` only
the pairs that share an encoded neighbour, not the original code's several
dense (q + g)^2 matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from idlearn.evaluators import neighbors

_CHUNK_ELEMENTS = 1 << 22  # pooled distances per chunk (float64: 32 MiB)
_JACCARD_TERMS = 1 << 21  # min(V_il, V_jl) terms per chunk (~100 MiB)


def k_reciprocal_neighbors(initial_rank: Any, k: int) -> sp.csr_matrix:
  """k-reciprocal neighbour sets of every entry of a pooled set.

  Args:
    initial_rank: [n, m] int, m >= k + 1; row i lists i's nearest entries,
      closest first (normally i itself first).
    k: neighbourhood size; `initial_rank[i, :k + 1]` is i's neighbourhood.

  Returns:
    [n, n] boolean CSR matrix R with R[i, j] true iff j is among the first
    k + 1 entries of row i and i among the first k + 1 entries of row j.
  """
  rank = np.asarray(initial_rank)
  n = rank.shape[0]
  if rank.ndim != 2 or rank.shape[1] < k + 1:
    raise ValueError(f"initial_rank must be [n, >= {k + 1}], got {rank.shape}")
  top = rank[:, : k + 1]
  a = sp.csr_matrix(
    (np.ones(top.size, bool), top.ravel(), np.arange(0, top.size + 1, k + 1)),
    shape=(n, n),
  )
  return a.multiply(a.T).tocsr().astype(bool)


def _encode(rank, k1, k2, weight):
  """Sparse k-reciprocal encoding V [n, n] float64 (after query expansion).

  Args:
    rank: [n, >= max(k1 + 1, k2)] nearest entries per row.
    weight: fn(rows, cols) -> d' for those pairs.
  """
  n, kmax = rank.shape[0], rank.shape[1] - 1  # small sets: k = n - 1
  half = int(np.around(k1 / 2))
  r = k_reciprocal_neighbors(rank, min(k1, kmax)).astype(np.int32)
  h = k_reciprocal_neighbors(rank, min(half, kmax)).astype(np.int32)
  k2 = min(k2, kmax + 1)
  h_size = np.asarray(h.sum(axis=1)).ravel()
  overlap = (r @ h.T).multiply(r).tocoo()  # |R(i) ∩ R(j, k1/2)|, j in R(i)
  ok = overlap.data > 2.0 / 3.0 * h_size[overlap.col]
  accepted = sp.csr_matrix(
    (np.ones(ok.sum(), np.int32), (overlap.row[ok], overlap.col[ok])),
    shape=(n, n),
  )
  expanded = (r + accepted @ h).tocoo()  # R*(i): any nonzero
  rows, cols = expanded.row, expanded.col
  w = np.exp(-weight(rows, cols))
  w /= np.bincount(rows, w, minlength=n)[rows]
  v = sp.csr_matrix((w, (rows, cols)), shape=(n, n))
  if k2 > 1:  # average the encodings of each entry's k2 nearest
    qe = sp.csr_matrix(
      (np.full(n * k2, 1.0 / k2), rank[:, :k2].ravel(), np.arange(n + 1) * k2),
      shape=(n, n),
    )
    v = qe @ v
  return v.tocsr()


def _shared_mass(v, v_csc, rows):
  """s = sum_l min(V_il, V_jl) for `rows` against all n: [len(rows), n]."""
  n = v.shape[0]
  sub = v[rows]
  ks, vik = sub.indices, sub.data
  local = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
  lens = v_csc.indptr[ks + 1] - v_csc.indptr[ks]
  offs = np.cumsum(lens) - lens
  at = np.repeat(v_csc.indptr[ks] - offs, lens) + np.arange(lens.sum())
  both = np.minimum(np.repeat(vik, lens), v_csc.data[at])  # min(V_il, V_jl)
  s = np.bincount(
    np.repeat(local, lens) * n + v_csc.indices[at],
    both,
    minlength=len(rows) * n,
  ).reshape(len(rows), n)
  return s


def _jaccard(s):
  """d_J = 1 - s / (2 - s), float64, from the shared mass s."""
  return np.maximum(1.0 - s / (2.0 - s), 0.0)


class _DensePool:
  """Pooled [q + g] distances assembled from the three given blocks."""

  def __init__(self, q_g, q_q, g_g):
    self.blocks = q_g, q_q, g_g
    self.nq, self.n = q_g.shape[0], q_g.shape[0] + q_g.shape[1]

  def rows(self, i0, i1):
    q_g, q_q, g_g = self.blocks
    parts = []
    if i0 < self.nq:
      e = min(i1, self.nq)
      parts.append(np.concatenate([q_q[i0:e], q_g[i0:e]], axis=1))
    if i1 > self.nq:
      s = max(i0, self.nq) - self.nq
      e = i1 - self.nq
      parts.append(np.concatenate([q_g[:, s:e].T, g_g[s:e]], axis=1))
    return np.concatenate(parts).astype(np.float64)

  def neighbours(self, kk, row_normalize):
    """Exact: nearest kk per row by d^2 (/ row max) and each row's scale."""
    rank, scale = np.empty((self.n, kk), np.int64), np.ones(self.n, np.float32)
    step = max(1, _CHUNK_ELEMENTS // self.n)
    for i in range(0, self.n, step):
      d = (self.rows(i, i + step) ** 2).astype(np.float32)
      if row_normalize:  # the original code divides d^2 by its row maximum
        scale[i : i + step] = d.max(axis=1)
        d /= scale[i : i + step, None]
      rank[i : i + step] = neighbors.top_k(d, kk)
    return rank, scale

  def pairs(self, r, c):
    q_g, q_q, g_g = self.blocks
    nq, out = self.nq, np.empty(len(r))
    for rq in (True, False):
      for cq in (True, False):
        m = ((r < nq) == rq) & ((c < nq) == cq)
        rr, cc = r[m] - (0 if rq else nq), c[m] - (0 if cq else nq)
        if rq:
          out[m] = q_q[rr, cc] if cq else q_g[rr, cc]
        else:
          out[m] = q_g[cc, rr] if cq else g_g[rr, cc]
    return out


class _FeaturePool:
  """Pooled Euclidean distances computed from [n, d] features on demand."""

  def __init__(self, feats, nq):
    self.f = feats.astype(np.float64)
    self.sq = np.einsum("nd,nd->n", self.f, self.f)
    self.nq, self.n = nq, len(feats)

  def rows(self, i0, i1):
    d2 = self.sq[i0:i1, None] + self.sq[None] - 2.0 * self.f[i0:i1] @ self.f.T
    return np.sqrt(np.maximum(d2, 0.0))

  def neighbours(self, kk, row_normalize):
    """`neighbors.search` (exact or faiss): ranks and row scales."""
    backend = neighbors.choose_backend(self.n, self.n)
    _, rank = neighbors.search(self.f, self.f, kk, backend=backend)
    scale = np.ones(self.n, np.float32)
    if row_normalize:  # d^2 to the farthest entry, recomputed in float64
      _, far = neighbors.farthest(self.f, self.f, backend=backend)
      scale = (self.pairs(np.arange(self.n), far) ** 2).astype(np.float32)
    return rank, scale

  def pairs(self, r, c):
    out = np.empty(len(r))
    step = max(1, _CHUNK_ELEMENTS // self.f.shape[1])  # bounded gathers
    for s in range(0, len(r), step):
      diff = self.f[r[s : s + step]] - self.f[c[s : s + step]]
      out[s : s + step] = np.sqrt(np.einsum("nd,nd->n", diff, diff))
    return out


def _pooled_jaccard(pool, k1, k2, row_normalize, rows):
  kk = min(max(k1 + 1, k2), pool.n)
  rank, scale = pool.neighbours(kk, row_normalize)

  def weight(r, c):
    return (pool.pairs(r, c) ** 2).astype(np.float32) / scale[r]

  v = _encode(rank, k1, k2, weight)
  v_csc = v.tocsc()
  # Chunks bounded in rows (dense output) and in (i, l, j) terms of d_J.
  terms = np.cumsum((v[rows] != 0) @ np.diff(v_csc.indptr))
  step, i = max(1, _CHUNK_ELEMENTS // pool.n), 0
  while i < len(rows):
    done = terms[i - 1] if i else 0
    j = np.searchsorted(terms, done + _JACCARD_TERMS, "right")
    j = min(max(j, i + 1), i + step)
    yield i, _shared_mass(v, v_csc, rows[i:j]), scale
    i = j


def jaccard_distance(
  features: Any,
  *,
  k1: int = 20,
  k2: int = 6,
  sparse: bool = False,
  max_distance: float | None = None,
) -> np.ndarray | sp.csr_matrix:
  """Jaccard distance of k-reciprocal encodings within one set.

  The pseudo-label distance of SpCL / DomainMix-style clustering: features
  are L2-normalised, d'(i, j) = |f_i - f_j|^2 = 2 - 2 cos (no row scaling),
  and the encoding and d_J are as in the module docstring.

  Args:
    features: [n, d] features, finite.
    k1: k-reciprocal neighbourhood size (DomainMix/SpCL use 30 or 20).
    k2: query-expansion size (1 disables it).
    sparse: return only the pairs that share an encoded neighbour (d_J < 1)
      as a CSR matrix. With query expansion most pairs do (measured: 80%
      of 4,000 clustered features), so pass max_distance too.
    max_distance: with sparse, keep only pairs within this distance (e.g.
      the largest DBSCAN radius: a missing pair is then never a neighbour);
      memory O(kept pairs + n k1 k2) instead of n^2.

  Returns: [n, n] float32 distances in [0, 1]; 0 on the diagonal only where
    an entry's encoding is its own, 1 for pairs sharing no neighbour. With
    sparse: a float32 CSR matrix holding those values (explicit zeros kept)
    for the stored pairs; a missing pair means d_J = 1 (or > max_distance).
  """
  f = _finite_2d(features, "features")
  f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  n = len(f)
  pool = _FeaturePool(f, n)
  chunks = _pooled_jaccard(pool, k1, k2, False, np.arange(n))
  if not sparse:
    out = np.empty((n, n), np.float32)
    for i, s, _ in chunks:
      out[i : i + len(s)] = _jaccard(s)
    return out
  cols, vals, counts = [], [], []
  for _, s, _ in chunks:
    r, c = np.nonzero(s)  # row-major: rows, then columns, in order
    d = _jaccard(s[r, c]).astype(np.float32)
    if max_distance is not None:
      keep = d.astype(np.float64) <= max_distance  # as DBSCAN compares
      r, c, d = r[keep], c[keep], d[keep]
    cols.append(c.astype(np.int32))
    vals.append(d)
    counts.append(np.bincount(r, minlength=len(s)))
  indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
  return sp.csr_matrix(
    (np.concatenate(vals), np.concatenate(cols), indptr), shape=(n, n)
  )


def _rerank_pool(pool, k1, k2, lambda_value):
  nq = pool.nq
  out = np.empty((nq, pool.n - nq), np.float32)
  for i, s, scale in _pooled_jaccard(pool, k1, k2, True, np.arange(nq)):
    rows = slice(i, i + len(s))
    orig = (pool.rows(rows.start, rows.stop)[:, nq:] ** 2).astype(np.float32)
    orig /= scale[rows, None]
    out[rows] = (1 - lambda_value) * _jaccard(s[:, nq:]) + lambda_value * orig
  return out


def rerank_distances(
  q_g_dist: Any,
  q_q_dist: Any,
  g_g_dist: Any,
  *,
  k1: int = 20,
  k2: int = 6,
  lambda_value: float = 0.3,
) -> np.ndarray:
  """k-reciprocal re-ranked query-gallery distances from given distances.

  Same inputs and output as the original code (and torchreid's
  `re_ranking`): the distances are squared and scaled by their pooled row
  maximum before encoding.

  Args:
    q_g_dist: [q, g] query-gallery distances.
    q_q_dist: [q, q] query-query distances.
    g_g_dist: [g, g] gallery-gallery distances.
    k1, k2, lambda_value: the paper's k1 = 20, k2 = 6, lambda = 0.3.

  Returns: [q, g] float32 re-ranked distances (smaller is closer); pass to
    `reid.evaluate_distances`.
  """
  q_g = _finite_2d(q_g_dist, "q_g_dist")
  q_q = _finite_2d(q_q_dist, "q_q_dist")
  g_g = _finite_2d(g_g_dist, "g_g_dist")
  nq, ng = q_g.shape
  if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
    raise ValueError(
      f"q_q_dist {q_q.shape} and g_g_dist {g_g.shape} must be "
      f"{(nq, nq)} and {(ng, ng)} to match q_g_dist {q_g.shape}"
    )
  return _rerank_pool(_DensePool(q_g, q_q, g_g), k1, k2, lambda_value)


def rerank(
  query_feats: Any,
  gallery_feats: Any,
  *,
  k1: int = 20,
  k2: int = 6,
  lambda_value: float = 0.3,
  metric: str = "euclidean",
) -> np.ndarray:
  """k-reciprocal re-ranking from features, without dense pooled matrices.

  Equals `rerank_distances` on the Euclidean distances of the features
  (L2-normalised first when metric="cosine").

  Args:
    query_feats: [q, d] features.
    gallery_feats: [g, d] features.
    k1, k2, lambda_value: as in `rerank_distances`.
    metric: "euclidean" or "cosine".

  Returns: [q, g] float32 re-ranked distances.
  """
  q = _finite_2d(query_feats, "query_feats")
  g = _finite_2d(gallery_feats, "gallery_feats")
  if q.shape[1] != g.shape[1]:
    raise ValueError(f"query_feats dim {q.shape[1]} != gallery {g.shape[1]}")
  if metric not in ("euclidean", "cosine"):
    raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
  f = np.concatenate([q, g]).astype(np.float64)
  if metric == "cosine":
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  return _rerank_pool(_FeaturePool(f, len(q)), k1, k2, lambda_value)


def _finite_2d(x, name):
  x = np.asarray(x)
  if x.ndim != 2 or 0 in x.shape:
    raise ValueError(f"{name} must be a non-empty 2-D array, got {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name} contains NaN or infinite values")
  return x

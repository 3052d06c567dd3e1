"""Nearest-neighbour search shared by kNN, re-ranking, centralization and
pseudo labels.

Two paths behind one call, chosen by problem size (queries x database):
- exact: chunked NumPy matmul + partial sort, ties broken towards the lower
  database index, in the inputs' precision (float64 in, float64 out);
- faiss (`pip install idlearn[scale]`, i.e. `faiss-cpu`): a flat index
  (IndexFlatIP / IndexFlatL2), moved to the GPUs when faiss sees any.
  Float32, so distances agree with the exact path to float32 rounding and
  neighbours up to near-ties. If faiss is missing, the exact path runs and
  a warning says so once.

Flat indexes only: evaluation numbers and k-reciprocal sets should not
depend on an approximate index (IVF changes both), and a flat GPU index
already covers millions of entries.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

# queries x database pairs from which search goes to faiss (~16k x 16k).
FAISS_MIN_PAIRS = 1 << 28
_CHUNK_ELEMENTS = 1 << 23  # exact path: distances per chunk (32-64 MiB)
_GPU_MAX_K = 2048  # faiss GPU flat indexes return at most this many


@functools.cache
def _faiss():
  """The faiss module, or None after a one-time warning."""
  try:
    import faiss
  except ImportError:
    warnings.warn(
      "faiss is not installed (pip install faiss-cpu, or idlearn[scale]): "
      "large neighbour searches use the exact NumPy path, which is slower",
      stacklevel=3,
    )
    return None
  return faiss


def top_k(dist: np.ndarray, k: int) -> np.ndarray:
  """Column indices of the k smallest entries of each row, smallest first.

  Ties go to the lower column index, also at the k-th place.

  Args:
    dist: [b, n] float; +inf marks excluded entries.
    k: 1 <= k <= n.

  Returns: [b, k] int64 indices.
  """
  b, n = dist.shape
  if k >= n:
    return np.argsort(dist, axis=1, kind="stable")[:, :k]
  part = np.argpartition(dist, k - 1, axis=1)[:, :k]  # [b, k] unordered
  part.sort(axis=1)
  vals = np.take_along_axis(dist, part, 1)
  order = np.argsort(vals, axis=1, kind="stable")
  top = np.take_along_axis(part, order, 1)
  # argpartition picks any of the entries tied at the k-th value: redo the
  # rows where more are tied than it kept, with a stable sort.
  kth = np.take_along_axis(vals, order[:, -1:], 1)  # [b, 1]
  redo = np.flatnonzero((dist <= kth).sum(axis=1) > k)
  if len(redo):
    top[redo] = np.argsort(dist[redo], axis=1, kind="stable")[:, :k]
  return top


def _check(queries, database, metric):
  q, x = np.asarray(queries), np.asarray(database)
  if q.ndim != 2 or x.ndim != 2 or q.shape[1] != x.shape[1] or 0 in x.shape:
    raise ValueError(
      f"queries [m, d] and database [n, d] must share d: {q.shape} {x.shape}"
    )
  if metric not in ("ip", "l2"):
    raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
  dtype = np.result_type(q.dtype, x.dtype, np.float32)
  return q.astype(dtype, copy=False), x.astype(dtype, copy=False)


def _exact_chunks(q, x, metric):
  """Yields (row offset, [b, n] distances: -ip or squared L2)."""
  sq = np.einsum("nd,nd->n", x, x) if metric == "l2" else None
  step = max(1, _CHUNK_ELEMENTS // len(x))
  for i in range(0, len(q), step):
    block = q[i : i + step] @ x.T  # [b, n]
    if metric == "ip":
      yield i, np.negative(block, out=block)
    else:
      qq = np.einsum("bd,bd->b", q[i : i + step], q[i : i + step])
      block *= -2.0
      block += qq[:, None]
      block += sq[None]
      yield i, np.maximum(block, 0.0, out=block)


def choose_backend(m: int, n: int, backend: str = "auto") -> str:
  """The path for m queries x n entries, "exact" or "faiss" (`search`)."""
  if backend not in ("auto", "exact", "faiss"):
    raise ValueError(f"backend must be auto, exact or faiss: {backend!r}")
  if backend == "exact" or (backend == "auto" and m * n < FAISS_MIN_PAIRS):
    return "exact"
  return "faiss" if _faiss() is not None else "exact"


def _faiss_search(q, x, k, metric):
  faiss = _faiss()
  x32 = np.ascontiguousarray(x, np.float32)
  index = (faiss.IndexFlatIP if metric == "ip" else faiss.IndexFlatL2)(
    x.shape[1]
  )
  if faiss.get_num_gpus() > 0 and k <= _GPU_MAX_K:
    index = faiss.index_cpu_to_all_gpus(index)
  index.add(x32)
  vals, idx = index.search(np.ascontiguousarray(q, np.float32), k)
  return vals, idx.astype(np.int64)


def search(
  queries: Any,
  database: Any,
  k: int,
  *,
  metric: str = "l2",
  exclude_self: bool = False,
  backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest database entries of each query, nearest first.

  Args:
    queries: [m, d] float features.
    database: [n, d] float features.
    k: neighbours per query, <= n (<= n - 1 with exclude_self).
    metric: "l2" (squared Euclidean, smallest first) or "ip" (inner
      product, largest first: cosine similarity on unit features).
    exclude_self: queries are the database (same rows, same order) and no
      entry is its own neighbour.
    backend: "auto" (faiss from FAISS_MIN_PAIRS pairs when installed),
      "exact" or "faiss".

  Returns: (values [m, k], indices [m, k] int64): squared distances or
    inner products, float32 from faiss, the inputs' precision otherwise.
  """
  q, x = _check(queries, database, metric)
  n = len(x)
  if not 1 <= k <= n - exclude_self:
    raise ValueError(f"k={k} needs 1 <= k <= {n - exclude_self} entries")
  if exclude_self and len(q) != n:
    raise ValueError(f"exclude_self needs queries == database: {q.shape}")
  if choose_backend(len(q), n, backend) == "faiss":
    vals, idx = _faiss_search(q, x, k + exclude_self, metric)
    if exclude_self:  # drop self where found, else the last neighbour
      own = idx == np.arange(n)[:, None]
      keep = np.argsort(own, axis=1, kind="stable")[:, :k]
      vals = np.take_along_axis(vals, keep, 1)
      idx = np.take_along_axis(idx, keep, 1)
    return vals, idx
  vals = np.empty((len(q), k), q.dtype)
  idx = np.empty((len(q), k), np.int64)
  for i, dist in _exact_chunks(q, x, metric):
    b = len(dist)
    if exclude_self:
      dist[np.arange(b), i + np.arange(b)] = np.inf
    top = top_k(dist, k)
    idx[i : i + b] = top
    vals[i : i + b] = np.take_along_axis(dist, top, 1)
  if metric == "ip":
    np.negative(vals, out=vals)
  return vals, idx


def farthest(
  queries: Any, database: Any, *, metric: str = "l2", backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
  """The farthest database entry of each query (re-ranking's row scale).

  Args:
    queries: [m, d], database: [n, d] float features.
    metric, backend: as in `search`.

  Returns: (values [m], indices [m] int64): the largest squared distance,
    or the smallest inner product.
  """
  q, x = _check(queries, database, metric)
  if choose_backend(len(q), len(x), backend) == "faiss":
    # Max inner product search: -q.x for "ip"; for "l2", |q - x|^2 =
    # |q|^2 + [-2q, 1].[x, |x|^2], so the farthest x maximises that product.
    if metric == "ip":
      vals, idx = _faiss_search(-q, x, 1, "ip")
      return -vals[:, 0], idx[:, 0]
    qa = np.concatenate([-2.0 * q, np.ones((len(q), 1), q.dtype)], 1)
    xa = np.concatenate([x, np.einsum("nd,nd->n", x, x)[:, None]], 1)
    vals, idx = _faiss_search(qa, xa, 1, "ip")
    qq = np.einsum("md,md->m", q, q).astype(np.float32)
    return np.maximum(vals[:, 0] + qq, 0.0), idx[:, 0]
  vals = np.empty(len(q), q.dtype)
  idx = np.empty(len(q), np.int64)
  for i, dist in _exact_chunks(q, x, metric):
    j = dist.argmax(axis=1)  # largest distance / smallest product
    idx[i : i + len(dist)] = j
    vals[i : i + len(dist)] = dist[np.arange(len(dist)), j]
  if metric == "ip":
    np.negative(vals, out=vals)
  return vals, idx

"""Neighbour feature centralization (NFC, "From Poses to Identity", Yuan et
al., CVPR 2025).

Features of one identity scatter around an identity centre; adding each
feature's *mutual* nearest neighbours (likely the same identity) moves it
towards that centre without training. With f the L2-normalised features,
N_k(i) the k nearest other entries of i (by cosine similarity, equivalently
Euclidean distance on unit vectors):

  M(i)  = {j in N_k1(i) : i in N_k2(j)}
  f'_i  = normalize(f_i + sum_{j in M(i)} f_j)

The paper's defaults are k1 = k2 = 2. Apply it to the query and gallery
features (each set on its own, or the two pooled) before computing
distances or re-ranking. Neighbours come from `neighbors.search` (exact,
or faiss for large sets).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from idlearn.evaluators import neighbors
from idlearn.evaluators.features import unit


def nearest(feats: np.ndarray, k: int) -> np.ndarray:
  """The k most cosine-similar other rows of each row, closest first.

  Args:
    feats: [n, d] L2-normalised features; k < n.
  Returns: [n, k] int indices (exact path ties: lower index first).
  """
  return neighbors.search(feats, feats, k, metric="ip", exclude_self=True)[1]


def centralize(feats: Any, *, k1: int = 2, k2: int = 2) -> np.ndarray:
  """Neighbour feature centralization of one feature set.

  Args:
    feats: [n, d] finite features (any norm), n >= 2.
    k1: neighbours of i considered as its potential positives.
    k2: j keeps i only if i is among j's k2 nearest (mutuality).

  Returns: [n, d] float32 L2-normalised centralized features.
  """
  f = np.asarray(feats)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"feats must be [n >= 2, d], got shape {f.shape}")
  if not np.isfinite(f).all():
    raise ValueError("feats contains NaN or infinite values")
  if min(k1, k2) < 1:
    raise ValueError(f"k1 and k2 must be >= 1, got {k1}, {k2}")
  f = unit(f.astype(np.float32))
  k1, k2 = min(k1, len(f) - 1), min(k2, len(f) - 1)
  nbr = nearest(f, max(k1, k2))
  cand = nbr[:, :k1]  # [n, k1]
  back = nbr[cand, :k2]  # [n, k1, k2]: each candidate's own neighbours
  mutual = (back == np.arange(len(f))[:, None, None]).any(axis=2)
  out = f + np.einsum("nk,nkd->nd", mutual.astype(np.float32), f[cand])
  return unit(out)

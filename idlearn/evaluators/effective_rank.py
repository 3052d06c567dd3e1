"""Effective rank of a feature matrix: a measure of dimensional collapse.

Roy & Vetterli, "The effective rank: a measure of effective
dimensionality" (EUSIPCO 2007): with sigma_1 >= ... >= sigma_r the singular
values of the (column-centred) n x d feature matrix and p_k = sigma_k /
sum_j sigma_j,

  erank = exp(H(p)),   H(p) = -sum_k p_k log p_k   (0 log 0 = 0),

a real number in [1, rank]: 1 when every feature lies on one line, d when
the spectrum is flat (isotropic features), so it counts the directions the
features actually use. Hydra's paper claims it "prevents dimensional
collapse" (Jing et al., ICLR 2022 show it with the singular-value spectrum
of the embedding's covariance); its text is not at hand to say which
summary it reports, so this is Roy & Vetterli's definition on the centred
features (centring measures the spread around the mean, as a covariance
spectrum does; RankMe, Garrido et al. 2023, uses the same entropy without
centring: `center=False`). Singular values, not their squares (the
covariance eigenvalues), as Roy & Vetterli define it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def singular_values(
  features: Any, *, center: bool = True, normalize: bool = False
) -> np.ndarray:
  """Singular values (descending, float64 [min(n, d)]) of the features.

  Values at float64 rounding level (below max(n, d) * sqrt(n d) * eps *
  the largest absolute entry before centring: NumPy's `matrix_rank`
  tolerance, times a bound on the rounding of the centring) are set to 0:
  centring identical rows leaves such residues, not directions.

  Args:
    features: [n, d] features (NumPy or JAX, any float dtype).
    center: subtract the mean feature first.
    normalize: scale every row to unit L2 norm first (before centring),
      e.g. for features compared by cosine.
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or 0 in x.shape:
    raise ValueError(f"features must be a non-empty [n, d], got {x.shape}")
  if normalize:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
  tol = max(x.shape) * np.finfo(np.float64).eps * np.abs(x).max()
  if center:
    x = x - x.mean(axis=0, keepdims=True)
  s = np.linalg.svd(x, compute_uv=False)
  return np.where(s > tol * np.sqrt(x.size), s, 0.0)


def effective_rank(
  features: Any, *, center: bool = True, normalize: bool = False
) -> float:
  """exp(entropy of the L1-normalised singular values); see the module doc.

  Args:
    features: [n, d] features.
    center: subtract the mean feature first (the default; see the module
      docstring).
    normalize: scale every row to unit L2 norm first.
  Returns:
    The effective rank in [1, min(n, d)] as a Python float; 0.0 when the
    (centred) matrix is zero (every feature the same).
  """
  s = singular_values(features, center=center, normalize=normalize)
  total = s.sum()
  if total <= 0:
    return 0.0
  p = s / total
  p = p[p > 0]
  return float(np.exp(-np.sum(p * np.log(p))))

"""Utilization of the embedding space (Metrix, Venkataramanan et al., ICLR
2022, Sec. 5): how close test examples come to the training examples.

  u(Q) = 1/|Q| sum_{q in Q} min_{x in X} ||f(q) - f(x)||^2

over test examples Q and training examples X, on unit features (the
paper's embeddings are L2-normalised). Lower means the test examples fall
closer to where training put examples: mixing is meant to spread training
over more of the space, so that unseen classes land nearer to it. The
formula is from the paper (the official code does not compute it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from idlearn.evaluators import neighbors
from idlearn.evaluators.features import unit


def utilization(
  test_feats: Any,
  train_feats: Any,
  *,
  normalize: bool = True,
  backend: str = "auto",
) -> float:
  """Mean squared Euclidean distance from each test feature to its nearest
  training feature.

  Args:
    test_feats: [m, d] features of the test examples.
    train_feats: [n, d] features of the training examples.
    normalize: scale every feature to unit L2 norm first (distances in
      [0, 4]).
    backend: nearest-neighbour path, see `neighbors.search`.

  Returns: u as a Python float.
  """
  q = np.asarray(test_feats, np.float64)
  x = np.asarray(train_feats, np.float64)
  if q.ndim != 2 or x.ndim != 2 or 0 in q.shape or 0 in x.shape:
    raise ValueError(
      f"test_feats [m, d] and train_feats [n, d] must be non-empty: "
      f"{q.shape} {x.shape}"
    )
  if normalize:
    q, x = unit(q), unit(x)
  dist, _ = neighbors.search(q, x, 1, metric="l2", backend=backend)
  return float(dist[:, 0].mean())

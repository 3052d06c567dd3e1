"""Weighted k-nearest-neighbour classification of frozen features.

The self-supervised monitor of InstDisc (Wu et al. 2018), as in solo-learn
and lightly: cosine similarity to every training feature, the k most similar
vote for their class with weight exp(similarity / temperature), and the
classes are ranked by their summed votes. The neighbours come from
`neighbors.search` (exact, or faiss for large banks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from idlearn.evaluators import neighbors
from idlearn.evaluators.features import unit

_QUERY_ELEMENTS = 1 << 22  # neighbours listed per query block


def _check(feats: Any, labels: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(feats), np.asarray(labels)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(
      f"{name}_feats must be a non-empty [n, d] array: {x.shape}"
    )
  if not np.isfinite(x).all():
    raise ValueError(f"{name}_feats contains NaN or infinite values")
  if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(
      f"{name}_labels must be [{len(x)}] integers, got {y.shape} {y.dtype}"
    )
  if y.min() < 0:
    raise ValueError(f"{name}_labels must be >= 0")
  return x, y


def predict_scores(
  train_feats: Any,
  train_labels: Any,
  test_feats: Any,
  *,
  k: int = 200,
  temperature: float = 0.07,
  num_classes: int | None = None,
) -> np.ndarray:
  """Class scores of each test feature from its k nearest training features.

  Args:
    train_feats: [n, d] features with labels `train_labels` [n] in
      [0, num_classes).
    test_feats: [m, d] features.
    k: neighbours (capped at n); temperature: vote sharpness.
    num_classes: defaults to max(train_labels) + 1.

  Returns: [m, num_classes] float64 summed votes.
  """
  x, y = _check(train_feats, train_labels, "train")
  q = np.asarray(test_feats)
  if q.ndim != 2 or q.shape[1] != x.shape[1] or not np.isfinite(q).all():
    raise ValueError(
      f"test_feats must be finite [m, {x.shape[1]}], got {q.shape}"
    )
  c = int(num_classes or y.max() + 1)
  k = min(k, len(x))
  x, q = unit(x), unit(q)
  scores = np.zeros((len(q), c))
  backend = neighbors.choose_backend(len(q), len(x))  # one for all blocks
  step = max(1, _QUERY_ELEMENTS // k)  # bounds the [b, k] neighbour lists
  for i in range(0, len(q), step):
    sim, top = neighbors.search(
      q[i : i + step], x, k, metric="ip", backend=backend
    )  # [b, k] each
    w = np.exp(sim.astype(np.float64) / temperature)
    rows = np.repeat(np.arange(len(top)), k)
    np.add.at(scores[i : i + step], (rows, y[top].ravel()), w.ravel())
  return scores


def evaluate(
  train_feats: Any,
  train_labels: Any,
  test_feats: Any,
  test_labels: Any,
  *,
  k: int = 200,
  temperature: float = 0.07,
  num_classes: int | None = None,
) -> dict[str, float]:
  """Weighted kNN top-1 / top-5 accuracy of test features.

  Args:
    train_feats, train_labels: [n, d] and [n] int, the memory bank.
    test_feats, test_labels: [m, d] and [m] int.
    k, temperature: InstDisc / solo-learn defaults 200 and 0.07.
    num_classes: defaults to 1 + the largest label in either set.

  Returns: {"top1", "top5"} accuracies in [0, 1]: the true class is the
    best, or among the best five, by summed votes (ties: lower class first).
  """
  _, y_train = _check(train_feats, train_labels, "train")
  _, y_test = _check(test_feats, test_labels, "test")
  c = int(num_classes or max(y_train.max(), y_test.max()) + 1)
  scores = predict_scores(
    train_feats, y_train, test_feats, k=k, temperature=temperature,
    num_classes=c,
  )  # fmt: skip
  # A class ranks above the true one if it scores strictly higher, or
  # equally with a lower index (argsort order).
  true = scores[np.arange(len(scores)), y_test][:, None]
  ahead = (scores > true) | (
    (scores == true) & (np.arange(c)[None] < y_test[:, None])
  )
  place = ahead.sum(axis=1)
  return {"top1": float(np.mean(place < 1)), "top5": float(np.mean(place < 5))}

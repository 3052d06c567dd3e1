"""How much of a label a linear map recovers from features: a ridge
classifier, closed form in float64, fitted on some groups of rows (e.g.
tracklets) and scored on the others.

Targets are one-hot labels, inputs standardised with the fit rows' mean
and standard deviation (constant columns left at 0);

  W = argmin_W |Xc W - Yc|^2 / n + alpha |W|^2     (Xc, Yc centred)

and a row is predicted as argmax_c (x - mean(X)) W + mean(Y) (the
intercept is the class frequencies of the fit rows). This is scikit-learn's
`RidgeClassifier(alpha = n * alpha)` on the standardised inputs (its
targets are +-1 instead of 0 / 1, which scales W and shifts the intercept
alike for every class: the same argmax). alpha is chosen by the
cross-validated accuracy over folds of whole groups of the fit rows,
so that it is selected for the same shift (new groups of known labels)
the test rows make.

Used to measure how much identity a code carries (e.g. a motion code that
should carry none, against an identity code that should carry all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)


def alternate_groups(labels: Any, groups: Any) -> np.ndarray:
  """The fit rows: half of each label's groups, the others for testing.

  A label's distinct groups, in sorted order, go fit, test, fit, test, ...
  (a label with one group is fit only: its rows cannot be tested on a new
  group).

  Args:
    labels: int [n] label of each row (e.g. the identity).
    groups: int [n] group of each row (e.g. the tracklet; groups do not
      span labels).
  Returns:
    bool [n], True for the fit rows.
  """
  labels, groups = np.asarray(labels), np.asarray(groups)
  return _group_rank(labels, groups) % 2 == 0


def _group_rank(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
  """int [n]: the rank of each row's group among its label's groups."""
  rank = np.zeros(len(labels), np.int64)
  for label in np.unique(labels):
    rows = labels == label
    rank[rows] = np.searchsorted(np.unique(groups[rows]), groups[rows])
  return rank


def _standardize(x, *others):
  mu, sd = x.mean(0), x.std(0)
  sd = np.where(sd > 1e-12, sd, np.inf)
  return [(a - mu) / sd for a in (x, *others)]


def _ridge(xs, onehot, alphas):
  """[(W [f, c], intercept [c])] per alpha on standardised xs [n, f]."""
  mx, my = xs.mean(0), onehot.mean(0)
  xc, n = xs - mx, len(xs)
  e, v = np.linalg.eigh(xc.T @ xc / n)  # [f], [f, f]
  b = v.T @ (xc.T @ (onehot - my) / n)  # [f, c]
  out = []
  for alpha in alphas:
    w = v @ (b / (np.maximum(e, 0.0) + alpha)[:, None])
    out.append((w, my - mx @ w))
  return out


def _accuracy(model, x, y_index):
  w, c = model
  return float(np.mean(np.argmax(x @ w + c, axis=1) == y_index))


def evaluate(
  x_fit: Any,
  y_fit: Any,
  x_test: Any,
  y_test: Any,
  *,
  groups: Any = None,
  alphas: Sequence[float] = ALPHAS,
  folds: int = 2,
) -> dict[str, float]:
  """Top-1 accuracy of a ridge classifier of the labels on held-out rows.

  Args:
    x_fit: [n, f] fit features; y_fit: int [n] their labels.
    x_test: [m, f] test features; y_test: int [m] their labels (a label
      absent from the fit rows counts as a miss).
    groups: int [n] group of each fit row (e.g. tracklet): the penalty is
      chosen by accuracy over `folds` folds, a row's fold being the rank
      of its group among its label's groups modulo `folds` (each fold
      leaves out whole groups of every label). None, or fewer than 2
      folds that way: each row is its own group.
    alphas: candidate penalties (on standardised inputs; > 0).
    folds: cross-validation folds (>= 2).
  Returns:
    {"top1": test accuracy, "alpha": the chosen penalty, "cv_top1": its
    cross-validated accuracy (NaN with one candidate), "chance": the test
    accuracy of always naming the fit rows' most frequent label}.
  """
  x, xt = np.asarray(x_fit, np.float64), np.asarray(x_test, np.float64)
  y, yt = np.asarray(y_fit), np.asarray(y_test)
  if x.ndim != 2 or xt.ndim != 2 or x.shape[1] != xt.shape[1]:
    raise ValueError(
      f"x_fit and x_test must be [n, f] and [m, f], got {x.shape} and "
      f"{xt.shape}"
    )
  if y.shape != (len(x),) or yt.shape != (len(xt),) or len(x) < 2:
    raise ValueError(
      f"y_fit must be [{len(x)}] (>= 2 rows) and y_test [{len(xt)}], got "
      f"{y.shape} and {yt.shape}"
    )
  if not np.isfinite(x).all() or not np.isfinite(xt).all():
    raise ValueError("x_fit or x_test holds NaN or infinite values")
  if not len(alphas) or min(alphas) <= 0 or folds < 2:
    raise ValueError(
      f"alphas must be > 0 and folds >= 2, got {tuple(alphas)}, {folds}"
    )
  classes = np.unique(y)
  index = np.searchsorted(classes, y)  # [n] in [0, c)
  # test labels unseen in the fit rows: an index no prediction takes
  pos = np.minimum(np.searchsorted(classes, yt), len(classes) - 1)
  index_t = np.where(classes[pos] == yt, pos, -1)
  onehot = np.eye(len(classes))[index]  # [n, c]
  xs, xts = _standardize(x, xt)
  alpha, cv = float(alphas[0]), float("nan")
  if len(alphas) > 1:
    fold = _folds(y, groups, folds)
    hits = np.zeros(len(alphas))
    for k in np.unique(fold):
      tr, te = fold != k, fold == k
      a, b = _standardize(x[tr], x[te])
      for j, model in enumerate(_ridge(a, onehot[tr], alphas)):
        hits[j] += _accuracy(model, b, index[te]) * te.sum()
    best = int(np.argmax(hits))  # ties: the smallest penalty
    alpha, cv = float(alphas[best]), float(hits[best] / len(x))
  (model,) = _ridge(xs, onehot, [alpha])
  majority = np.argmax(np.bincount(index, minlength=len(classes)))
  return {
    "top1": _accuracy(model, xts, index_t),
    "alpha": alpha,
    "cv_top1": cv,
    "chance": float(np.mean(index_t == majority)),
  }


def _folds(labels, groups, folds):
  """int [n] cross-validation fold of each fit row (see `evaluate`)."""
  if groups is not None:
    fold = _group_rank(labels, np.asarray(groups)) % folds
    if len(np.unique(fold)) >= 2:
      return fold
  return _group_rank(labels, np.arange(len(labels))) % folds

"""Face verification on pairs: the LFW 10-fold protocol, ROC AUC, TAR@FAR.

A pair is scored by the cosine similarity of its two embeddings and called
"same" when the score is >= a threshold. Following LFW's protocol, fold k's
accuracy uses the threshold that maximises accuracy on the other folds
(the search is exact: every midpoint between consecutive distinct scores;
the lowest of equally good thresholds wins). ROC AUC and TAR@FAR are over
all pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from idlearn.evaluators.pairs import make_pairs, parse_lfw_pairs

__all__ = ["evaluate", "make_pairs", "parse_lfw_pairs", "scalars"]

FARS = (1e-1, 1e-2, 1e-3)


def _scores(emb1: Any, emb2: Any, same: Any) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(emb1, np.float64), np.asarray(emb2, np.float64)
  same = np.asarray(same)
  for name, x in (("emb1", a), ("emb2", b)):
    if x.ndim != 2 or x.shape[0] == 0:
      raise ValueError(
        f"{name} must be a non-empty [n, d] array, got {x.shape}"
      )
    if not np.isfinite(x).all():
      raise ValueError(f"{name} contains NaN or infinite values")
  if a.shape != b.shape:
    raise ValueError(f"emb1 {a.shape} and emb2 {b.shape} differ in shape")
  if same.shape != (len(a),):
    raise ValueError(f"same must have shape ({len(a)},), got {same.shape}")
  if not np.isin(same, (0, 1)).all():
    raise ValueError("same must hold booleans (or 0/1)")
  same = same.astype(bool)
  if same.all() or not same.any():
    raise ValueError("same must contain both same and different pairs")
  a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return np.einsum("nd,nd->n", a, b), same


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
  """Threshold maximising the accuracy of `scores >= t` on these pairs.

  Args:
    scores: [n] similarities.
    same: [n] bool labels.
  Returns: (threshold, accuracy); the lowest threshold among the best.
  """
  u, inv = np.unique(scores, return_inverse=True)
  pos = np.bincount(inv, same, minlength=len(u))
  neg = np.bincount(inv, ~same, minlength=len(u))
  # Candidate c accepts the values above u[c - 1]: c = 0 accepts everything.
  true_pos = pos.sum() - np.concatenate([[0], np.cumsum(pos)])
  true_neg = np.concatenate([[0], np.cumsum(neg)])
  c = int(np.argmax(true_pos + true_neg))
  cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
  return float(cands[c]), float((true_pos + true_neg)[c] / len(scores))


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
  """Area under the ROC curve (Mann-Whitney; ties count one half)."""
  ranks = stats.rankdata(scores)
  p, n = same.sum(), (~same).sum()
  return float((ranks[same].sum() - p * (p + 1) / 2) / (p * n))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
  """Best true-accept rate whose false-accept rate is <= far.

  With N different pairs at most floor(far * N) may score >= t, so t must
  exceed the (floor(far * N) + 1)-th highest different-pair score.
  """
  neg = np.sort(scores[~same])[::-1]
  allowed = int(np.floor(far * len(neg) + 1e-9))
  if allowed >= len(neg):
    return 1.0
  return float(np.mean(scores[same] > neg[allowed]))


def evaluate(
  emb1: Any,
  emb2: Any,
  same: Any,
  *,
  folds: int = 10,
  fold_ids: Any = None,
) -> dict[str, Any]:
  """Verification metrics of embedding pairs under the LFW protocol.

  Args:
    emb1, emb2: [n, d] embeddings of the two sides of each pair.
    same: [n] bool, whether pair i shows one identity.
    folds: number of contiguous, equal-as-possible folds in pair order (LFW's
      pairs.txt and `make_pairs` list pairs fold by fold).
    fold_ids: optional [n] int fold of each pair, overriding `folds`.

  Returns:
    dict with "accuracy" (mean over folds), "accuracy_std" (population
    std over folds), "threshold" (mean cosine threshold), "roc_auc",
    "tar_at_far" ({1e-1: tar, 1e-2: tar, 1e-3: tar}) and "fold_accuracy"
    ([folds] array).
  """
  s, same = _scores(emb1, emb2, same)
  if fold_ids is None:
    if not 2 <= folds <= len(s):
      raise ValueError(f"folds must be in [2, {len(s)}], got {folds}")
    fold_ids = np.repeat(
      np.arange(folds), [len(p) for p in np.array_split(s, folds)]
    )
  fold_ids = np.asarray(fold_ids)
  if fold_ids.shape != s.shape:
    raise ValueError(
      f"fold_ids must have shape {s.shape}, got {fold_ids.shape}"
    )
  accs, thresholds = [], []
  for k in np.unique(fold_ids):
    test = fold_ids == k
    t, _ = best_threshold(s[~test], same[~test])
    thresholds.append(t)
    accs.append(np.mean((s[test] >= t) == same[test]))
  accs = np.asarray(accs)
  return {
    "accuracy": float(accs.mean()),
    "accuracy_std": float(accs.std()),
    "threshold": float(np.mean(thresholds)),
    "roc_auc": roc_auc(s, same),
    "tar_at_far": {far: tar_at_far(s, same, far) for far in FARS},
    "fold_accuracy": accs,
  }


def scalars(res: dict, name: str) -> dict[str, float]:
  """`evaluate`'s result as the flat "eval/<name>/..." metrics a run logs:
  accuracy (+ std), ROC AUC and TAR at each FAR."""
  out = {
    f"eval/{name}/{k}": float(res[k])
    for k in ("accuracy", "accuracy_std", "roc_auc")
  }
  for far, tar in res["tar_at_far"].items():
    out[f"eval/{name}/tar@far={far:g}"] = float(tar)
  return out

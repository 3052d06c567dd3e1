"""Verification pairs lists: LFW's pairs.txt, and a seeded balanced generator.

Both list pairs fold by fold (each fold: its same pairs, then its different
pairs), which is the order `verification.evaluate` splits into folds.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def parse_lfw_pairs(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads LFW's pairs.txt (or pairsDevTest.txt / pairsDevTrain.txt).

  The header is "<sets> <n>" (or just "<n>" for one set); each set has n
  lines "name i j" (same person) then n lines "name1 i name2 j".

  Args:
    path: the pairs file.

  Returns:
    dict of [p] arrays: "name1", "name2" (str), "index1", "index2" (int,
    1-based image numbers), "path1", "path2" ("name/name_0001.jpg", relative
    to the lfw image root), "same" (bool), "fold" (int, the set).
  """
  with open(path, encoding="utf-8") as f:
    lines = [ln.split() for ln in f if ln.strip()]
  if not lines or not 1 <= len(lines[0]) <= 2:
    raise ValueError(f"{path}: header must be '<sets> <pairs>' or '<pairs>'")
  sets, n = (1, int(lines[0][0])) if len(lines[0]) == 1 else map(int, lines[0])
  if len(lines) - 1 != 2 * sets * n:
    raise ValueError(
      f"{path}: header promises {2 * sets * n} pairs, found {len(lines) - 1}"
    )
  rows = []
  for ln_no, fields in enumerate(lines[1:], start=2):
    k = (ln_no - 2) // n  # block: even = same pairs, odd = different
    want = 3 if k % 2 == 0 else 4
    if len(fields) != want:
      raise ValueError(
        f"{path}, line {ln_no}: expected {want} fields, got {fields}"
      )
    if want == 3:
      rows.append((fields[0], fields[1], fields[0], fields[2], True, k // 2))
    else:
      rows.append((*fields, False, k // 2))
  name1, i1, name2, i2, same, fold = map(np.asarray, zip(*rows, strict=True))
  i1, i2 = i1.astype(int), i2.astype(int)
  return {
    "name1": name1,
    "index1": i1,
    "name2": name2,
    "index2": i2,
    "path1": np.asarray(
      [f"{a}/{a}_{i:04d}.jpg" for a, i in zip(name1, i1, strict=True)]
    ),
    "path2": np.asarray(
      [f"{a}/{a}_{i:04d}.jpg" for a, i in zip(name2, i2, strict=True)]
    ),
    "same": same.astype(bool),
    "fold": fold.astype(int),
  }


def make_pairs(
  ids: Any, *, folds: int = 10, pairs_per_fold: int = 60, seed: int = 0
) -> dict[str, np.ndarray]:
  """A seeded, balanced verification pairs list for an identity-labelled set.

  Every fold holds pairs_per_fold / 2 same-identity and as many
  different-identity pairs; no unordered pair occurs twice. Same pairs are
  drawn uniformly from all same-identity pairs, different pairs uniformly
  from all different-identity pairs.

  Args:
    ids: [n] identity label of each image.
    folds: number of folds.
    pairs_per_fold: even number of pairs per fold.
    seed: NumPy seed; the list depends only on (ids, folds, pairs_per_fold,
      seed).

  Returns:
    dict of [folds * pairs_per_fold] arrays "index1", "index2" (int, into
    `ids`, index1 < index2), "same" (bool), "fold" (int), fold by fold.
  """
  ids = np.asarray(ids)
  if ids.ndim != 1 or len(ids) < 2:
    raise ValueError(f"ids must be 1-D with >= 2 entries, got {ids.shape}")
  if pairs_per_fold <= 0 or pairs_per_fold % 2 or folds < 1:
    raise ValueError(
      f"need folds >= 1 and an even pairs_per_fold > 0, got {folds}, "
      f"{pairs_per_fold}"
    )
  half, need = pairs_per_fold // 2, folds * pairs_per_fold // 2
  rng = np.random.default_rng(seed)
  pos1, pos2 = _same_pairs(ids)
  n_diff = len(ids) * (len(ids) - 1) // 2 - len(pos1)
  for kind, have in (
    ("same-identity", len(pos1)),
    ("different-identity", n_diff),
  ):
    if have < need:
      raise ValueError(
        f"ids has {have} {kind} pairs, fewer than the {need} requested"
      )
  pick = rng.choice(len(pos1), need, replace=False)
  neg1, neg2 = _different_pairs(ids, need, rng)
  fold_major = lambda x: x.reshape(folds, half)  # noqa: E731
  return {
    "index1": np.hstack([fold_major(pos1[pick]), fold_major(neg1)]).ravel(),
    "index2": np.hstack([fold_major(pos2[pick]), fold_major(neg2)]).ravel(),
    "same": np.tile(np.repeat([True, False], half), folds),
    "fold": np.repeat(np.arange(folds), pairs_per_fold),
  }


def _same_pairs(ids):
  """All (i < j) with ids[i] == ids[j], ordered by (i, j)."""
  order = np.argsort(ids, kind="stable")
  _, starts, counts = np.unique(
    ids[order], return_index=True, return_counts=True
  )
  a, b = [], []
  for s, c in zip(starts, counts, strict=True):
    u, v = np.triu_indices(c, k=1)
    a.append(order[s + u])
    b.append(order[s + v])
  a, b = np.concatenate(a), np.concatenate(b)
  a, b = np.minimum(a, b), np.maximum(a, b)
  o = np.lexsort((b, a))
  return a[o], b[o]


def _different_pairs(ids, need, rng):
  """`need` distinct uniform (i < j) pairs with different ids (rejection)."""
  n, seen = len(ids), np.empty(0, np.int64)
  while len(seen) < need:
    a, b = rng.integers(0, n, (2, 2 * need + 16))
    keys = np.minimum(a, b) * n + np.maximum(a, b)
    keys = keys[ids[a] != ids[b]]
    # Keep first occurrences, in draw order, so the list depends on the seed.
    _, first = np.unique(np.concatenate([seen, keys]), return_index=True)
    seen = np.concatenate([seen, keys])[np.sort(first)]
  seen = seen[:need]
  return seen // n, seen % n

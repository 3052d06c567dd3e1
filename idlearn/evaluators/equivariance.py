"""How much of an augmentation a representation keeps: the R^2 of
predicting the transformation between two views from their features.

SIE (Garrido et al., ICML 2023) measures equivariance by training a
predictor of the relative rotation between two views from the concatenation
of their representations, and reports its R^2 on held-out data
(`eval_angle_prediction.py`: an MLP, trained with Adam). Here the predictor
is linear and fitted in closed form (ridge regression in float64, the
penalty chosen by cross-validation over the fit identities): pairs of
held-out identities, standardised inputs, one R^2 per target (as
scikit-learn's `r2_score` per output; the official `r2_score` pools every
target around one global mean). A representation that is invariant to a
transformation gives R^2 near 0 for it; one that keeps it linearly
decodable, near 1.

`view_pairs` makes the pairs with the training augmentations
(`idlearn.augment`, JAX); `ridge_r2` and `pair_r2` are NumPy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3)


def _standardize(x, xt):
  """x, xt standardised with x's column mean and std (constant -> 0)."""
  mu, sd = x.mean(0), x.std(0)
  sd = np.where(sd > 1e-12, sd, np.inf)
  return (x - mu) / sd, (xt - mu) / sd


def _loo_errors(xs, yc, alphas):
  """[a, t] exact leave-one-out squared errors of ridge on centred data
  (the hat matrix's diagonal; the intercept is not refitted per row)."""
  n = len(xs)
  u, s, _ = np.linalg.svd(xs, full_matrices=False)  # [n, r], [r]
  uy = u.T @ yc  # [r, t]
  out = []
  for alpha in alphas:
    shrink = s**2 / (s**2 + n * alpha)  # [r]
    fitted = u @ (shrink[:, None] * uy)  # [n, t]
    leverage = (u**2) @ shrink  # [n], < 1 for alpha > 0
    out.append(np.sum(((yc - fitted) / (1 - leverage)[:, None]) ** 2, 0))
  return np.stack(out)


def _group_cv_errors(xs, y, groups, alphas, folds):
  """[a, t] squared errors of ridge refitted (centring included) without
  each fold of groups, on that fold; groups go to folds round-robin in
  sorted order."""
  uniq = np.unique(groups)
  fold = np.searchsorted(uniq, groups) % min(folds, len(uniq))
  err = np.zeros((len(alphas), y.shape[1]))
  for k in np.unique(fold):
    tr, te = fold != k, fold == k
    mx, my = xs[tr].mean(0), y[tr].mean(0)
    xtr, n = xs[tr] - mx, tr.sum()
    e, v = np.linalg.eigh(xtr.T @ xtr / n)
    b = v.T @ (xtr.T @ (y[tr] - my) / n)  # [f, t]
    for j, alpha in enumerate(alphas):
      w = v @ (b / (e + alpha)[:, None])
      err[j] += np.sum((y[te] - my - (xs[te] - mx) @ w) ** 2, 0)
  return err


def ridge_r2(
  x_fit: Any,
  y_fit: Any,
  x_test: Any,
  y_test: Any,
  *,
  alphas: Sequence[float] = ALPHAS,
  groups: Any = None,
  folds: int = 5,
) -> np.ndarray:
  """R^2 on the test rows of a ridge regression fitted on the fit rows.

  Inputs are standardised with the fit rows' mean and standard deviation
  (constant columns are left at 0), targets centred with the fit rows'
  mean; w = argmin ||X w - y||^2 / n + alpha ||w||^2, alpha chosen per
  target among `alphas`: by cross-validation over `groups` of fit rows
  (`folds` folds of whole groups, e.g. identities: the test rows are other
  identities too) when given, else by the exact leave-one-out error.

  Args:
    x_fit: [n, f] fit inputs; y_fit: [n, t] fit targets.
    x_test: [m, f] test inputs; y_test: [m, t] test targets.
    alphas: candidate penalties (on standardised inputs; > 0).
    groups: [n] group of each fit row, or None.
    folds: cross-validation folds (at most the number of groups).
  Returns:
    float64 [t]: 1 - SS_res / SS_tot per target on the test rows (SS_tot
    around the test mean); NaN where the test target is constant.
  """
  x, y = np.asarray(x_fit, np.float64), np.asarray(y_fit, np.float64)
  xt, yt = np.asarray(x_test, np.float64), np.asarray(y_test, np.float64)
  if x.ndim != 2 or xt.ndim != 2 or y.ndim != 2 or yt.ndim != 2:
    raise ValueError(
      f"expected 2-D inputs and targets, got {x.shape} {y.shape} "
      f"{xt.shape} {yt.shape}"
    )
  if len(x) != len(y) or len(xt) != len(yt) or len(x) < 2 or len(xt) < 1:
    raise ValueError(
      f"rows: {len(x)} fit inputs, {len(y)} fit targets (>= 2), "
      f"{len(xt)} test inputs, {len(yt)} test targets (>= 1)"
    )
  if not len(alphas) or min(alphas) <= 0:
    raise ValueError(f"alphas must be > 0, got {tuple(alphas)}")
  xs, xts = _standardize(x, xt)
  y_mu = y.mean(0)
  if groups is not None and len(np.unique(groups)) >= 2:
    err = _group_cv_errors(xs, y, np.asarray(groups), alphas, folds)
  else:
    err = _loo_errors(xs, y - y_mu, alphas)
  best = np.asarray(alphas, np.float64)[np.argmin(err, axis=0)]  # [t]
  n = len(xs)
  e, v = np.linalg.eigh(xs.T @ xs / n)
  b = v.T @ (xs.T @ (y - y_mu) / n)  # [f, t]
  w = v @ (b / (e[:, None] + best[None, :]))  # [f, t], each its alpha
  res = np.sum((yt - (xts @ w + y_mu)) ** 2, axis=0)
  tot = np.sum((yt - yt.mean(0)) ** 2, axis=0)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(tot > 1e-12, 1.0 - res / tot, np.nan)


def pair_r2(
  feats1: Any,
  feats2: Any,
  targets: Any,
  fit: Any,
  *,
  groups: Any = None,
  alphas: Sequence[float] = ALPHAS,
) -> np.ndarray:
  """R^2 of predicting each pair's transformation from [feats1, feats2].

  Args:
    feats1, feats2: [p, d] features of the first and second view of each
      pair.
    targets: [p, t] the transformation from view 1 to view 2 (e.g.
      `augment.relative_params`).
    fit: bool [p], the pairs to fit on; the others are tested.
    groups: [p] e.g. the identity of each pair: the penalty is chosen by
      cross-validation over groups of the fit pairs (None: leave-one-out).
    alphas: the ridge penalties to choose from (see `ridge_r2`).
  Returns:
    float64 [t] (see `ridge_r2`).
  """
  x = np.concatenate(
    [np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)], axis=1
  )
  y, fit = np.asarray(targets, np.float64), np.asarray(fit, bool)
  g = None if groups is None else np.asarray(groups)[fit]
  return ridge_r2(x[fit], y[fit], x[~fit], y[~fit], alphas=alphas, groups=g)


def view_pairs(
  images: np.ndarray,
  ids: np.ndarray,
  spec: Mapping[str, Any],
  transforms: Sequence[str] = (),
  *,
  pairs_per_image: int = 4,
  seed: int = 0,
  chunk: int = 256,
  where: str = "view_pairs",
) -> dict[str, Any]:
  """Two augmented views of every image, their relative parameters, and a
  fit / test split of the pairs by identity.

  Views are made by `augment.make_views` (both with `spec`) in chunks of
  `chunk` images (the training batch: BSS draws once per chunk; one
  compilation, bounded memory), and rounded back to uint8 (at most 0.5/255
  per pixel) so that any feature function of uint8 images embeds them.

  Args:
    images: uint8 [n, h, w, 3]; ids: [n] their identities (>= 2 distinct).
    spec: an `augment.make_views` spec.
    transforms: `augment.PARAM_NAMES` to return; () : every one that
      varies over the pairs.
    pairs_per_image: pairs drawn per image.
    seed: the views' and the identity split's seed.
    chunk: images augmented together.
    where: the config path, for errors.
  Returns:
    {"view1", "view2": uint8 [p, h', w', 3], "targets": float32 [p, t]
    (`augment.relative_params` of the two), "names": their t names,
    "ids": [p] each pair's identity, "fit": bool [p], the pairs of half
    the identities}, p = pairs_per_image * n.
  """
  import jax

  from idlearn import augment

  names = tuple(transforms) or augment.PARAM_NAMES
  make = jax.jit(
    lambda k, x: augment.make_views(k, x, [spec, spec], with_params=True)
  )
  mean = np.asarray(augment.IMAGENET_MEAN, np.float32)
  std = np.asarray(augment.IMAGENET_STD, np.float32)

  def to_uint8(v):
    return np.clip(np.round((np.asarray(v) * std + mean) * 255), 0, 255).astype(
      np.uint8
    )

  def pair(key, x):
    (x1, x2), (p1, p2) = make(key, x)
    rel = np.asarray(augment.relative_params(p1, p2, names))
    return to_uint8(x1), to_uint8(x2), rel

  n = len(images)
  padded = np.concatenate(
    [images, np.zeros((-n % chunk, *images.shape[1:]), images.dtype)]
  )
  key, parts = jax.random.key(seed), []
  for r in range(pairs_per_image):
    k = jax.random.fold_in(key, r)
    got = [
      pair(jax.random.fold_in(k, i), padded[i : i + chunk])
      for i in range(0, n, chunk)
    ]
    parts.append([np.concatenate(a)[:n] for a in zip(*got, strict=True)])
  v1, v2, rel = (np.concatenate(a) for a in zip(*parts, strict=True))
  if not transforms:  # those that vary
    keep = rel.std(0) > 1e-9
    rel = rel[:, keep]
    names = tuple(t for t, k in zip(names, keep, strict=True) if k)
  uniq = np.unique(ids)
  if len(uniq) < 2:
    raise ValueError(
      f"{where}: needs >= 2 identities (the probe is fitted on half, "
      f"tested on the others), got {len(uniq)}"
    )
  fit_ids = np.random.default_rng(seed).permutation(uniq)[: len(uniq) // 2]
  pair_ids = np.tile(ids, pairs_per_image)
  return {
    "view1": v1,
    "view2": v2,
    "targets": rel,
    "names": names,
    "ids": pair_ids,
    "fit": np.isin(pair_ids, fit_ids),
  }

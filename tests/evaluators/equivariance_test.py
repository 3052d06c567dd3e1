"""The equivariance R^2 (SIE's probe of the relative augmentation): ridge
with leave-one-out penalty against a brute-force float64 reference, the
view pairs, and its train-loop evaluator."""

import numpy as np
import pytest

from idlearn.evaluators import equivariance
from idlearn.training import eval as eval_lib

RNG = np.random.default_rng(0)


def _ref_r2(x, y, xt, yt, alphas, groups=None, folds=5):
  """Standardise / centre with the fit rows; choose alpha per target by
  explicit refits: leave-one-out (intercept kept), or without each fold of
  groups (assigned round-robin in sorted order; centring refitted); R^2
  on the test rows."""
  mu, sd = x.mean(0), x.std(0)
  xs, xts, ym = (x - mu) / sd, (xt - mu) / sd, y.mean(0)
  n, f = xs.shape

  def fit(rows, a, center=False):
    mx = xs[rows].mean(0) if center else np.zeros(f)
    my = y[rows].mean(0) if center else ym
    xr = xs[rows] - mx
    w = np.linalg.solve(
      xr.T @ xr + rows.sum() * a * np.eye(f), xr.T @ (y[rows] - my)
    )
    return lambda z: (z - mx) @ w + my

  if groups is None:
    held = [np.arange(n) == i for i in range(n)]
  else:
    uniq = sorted(set(groups))
    fold = np.array([uniq.index(g) % folds for g in groups])
    held = [fold == k for k in range(folds)]
  errs = np.zeros((len(alphas), y.shape[1]))
  for j, a in enumerate(alphas):
    for te in held:
      pred = fit(~te, a, center=groups is not None)(xs[te])
      errs[j] += np.sum((y[te] - pred) ** 2, 0)
  out = []
  for t in range(y.shape[1]):
    pred = fit(np.ones(n, bool), alphas[int(np.argmin(errs[:, t]))])(xts)
    res = np.sum((yt[:, t] - pred[:, t]) ** 2)
    out.append(1 - res / np.sum((yt[:, t] - yt[:, t].mean()) ** 2))
  return np.array(out)


@pytest.mark.parametrize("grouped", [False, True])
def test_ridge_r2_matches_brute_force_refits(grouped):
  scale = np.array([1, 2, 3, 4, 5])
  x, xt = RNG.normal(size=(30, 5)) * scale, RNG.normal(size=(20, 5)) * scale
  w = RNG.normal(size=(5, 3))
  w[:, 2] = 0  # a target the inputs do not explain
  noise = [0.1, 2.0, 1.0]
  y = x @ w + RNG.normal(size=(30, 3)) * noise
  yt = xt @ w + RNG.normal(size=(20, 3)) * noise
  alphas = (1e-3, 0.1, 1.0, 10.0)
  groups = np.repeat(np.arange(7, 17), 3) if grouped else None
  got = equivariance.ridge_r2(x, y, xt, yt, alphas=alphas, groups=groups)
  want = _ref_r2(x, y, xt, yt, alphas, None if groups is None else list(groups))
  np.testing.assert_allclose(got, want, rtol=1e-9)
  assert got[0] > 0.99 and got[2] < 0.1  # decodable vs not


def test_ridge_r2_edge_cases():
  x = RNG.normal(size=(10, 3))
  y = np.c_[x[:, 0], np.ones(10)]  # the second target is constant
  x[:, 2] = 1.0  # a constant input column is ignored
  got = equivariance.ridge_r2(x, y, x, y)
  assert got[0] > 0.99 and np.isnan(got[1])
  with pytest.raises(ValueError, match="alphas must be > 0"):
    equivariance.ridge_r2(x, y, x, y, alphas=(0.0,))
  with pytest.raises(ValueError, match="rows"):
    equivariance.ridge_r2(x[:1], y[:1], x, y)


def test_view_pairs_split_by_identity():
  images = RNG.integers(0, 256, (12, 16, 8, 3), dtype=np.uint8)
  ids = np.repeat([3, 5, 7, 9], 3)
  spec = dict(crop_scale=(0.5, 1.0), flip=0.5, size=(8, 4))
  got = equivariance.view_pairs(images, ids, spec, pairs_per_image=2, chunk=8)
  v1, v2, rel, fit = got["view1"], got["view2"], got["targets"], got["fit"]
  assert v1.shape == v2.shape == (24, 8, 4, 3) and v1.dtype == np.uint8
  names = ("crop_y", "crop_x", "crop_scale", "crop_aspect", "flip")
  assert got["names"] == names
  assert rel.shape == (24, 5) and set(rel[:, 4]) <= {0.0, 1.0}
  np.testing.assert_array_equal(got["ids"], np.tile(ids, 2))
  for i in np.unique(ids):  # an identity is on one side only
    assert len(set(fit[got["ids"] == i])) == 1
  assert fit.sum() == 12  # half the identities
  # without augmentation the uint8 round trip gives the images back and
  # nothing varies
  got = equivariance.view_pairs(images, ids, {})
  np.testing.assert_array_equal(got["view1"], np.tile(images, (4, 1, 1, 1)))
  np.testing.assert_array_equal(got["view2"], got["view1"])
  assert got["names"] == () and got["targets"].shape == (48, 0)
  with pytest.raises(ValueError, match=">= 2 identities"):
    equivariance.view_pairs(images, np.zeros(12), spec)


def test_evaluator_reports_r2_per_part_and_transform():
  p, names = 120, ("crop_scale", "flip")
  rel = np.c_[RNG.normal(size=p), RNG.integers(0, 2, p)].astype(np.float32)
  # image i of view v: pixel (0, 0) holds i, pixel (0, 1) holds v
  views = np.zeros((2, p, 4, 2, 3), np.uint8)
  views[:, :, 0, 0, 0] = np.arange(p)
  views[1, :, 0, 0, 1] = 1
  inv = RNG.normal(size=(2, p, 6))  # noise
  mix = RNG.normal(size=(2, 4))
  equi = np.stack([np.zeros((p, 4)), rel @ mix]) + 0.01 * RNG.normal(
    size=(2, p, 4)
  )
  seen = {}

  def features(state, x, **kw):
    seen.update(kw)
    i, v = x[:, 0, 0, 0], x[:, 0, 0, 1]
    emb = np.concatenate([inv[v, i], equi[v, i]], axis=1)
    return {"emb": emb, "eval": emb[:, :6]}

  (ev,) = eval_lib.make_evaluators(
    {"r2": {"type": "equivariance", "data": "pku_reid", "split": "val",
            "equi_dims": 4, "flip_test": True, "feature": "eval"}},
    features,
  )  # fmt: skip
  ev._data = dict(
    view1=views[0], view2=views[1], targets=rel, names=names,
    ids=np.arange(p) // 4, fit=np.arange(p) < p // 2,
  )  # fmt: skip
  got = ev.run(state=None)
  assert got["eval/r2/r2_equi"] > 0.99 and got["eval/r2/r2_all"] > 0.95
  assert got["eval/r2/r2_inv"] < 0.1
  assert set(got) == {
    f"eval/r2/r2_{part}{t}"
    for part in ("all", "inv", "equi")
    for t in ("", "/crop_scale", "/flip")
  }
  assert seen["flip"] is False and seen["image_size"] == (4, 2)
  with pytest.raises(ValueError, match="transforms = .*'zoom'"):
    eval_lib.make_evaluators(
      {"r2": {"type": "equivariance", "data": "pku_reid", "split": "val",
              "transforms": ("zoom",)}},
      features,
    )  # fmt: skip
  ev.cfg["equi_dims"] = 10
  with pytest.raises(ValueError, match="equi_dims = 10"):
    ev.run(state=None)

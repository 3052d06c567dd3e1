"""The identity probe of codes (evaluators.ridge_probe) against
scikit-learn and on synthetic codes with a known answer, and the
code_probe evaluator of the train loop on a fake method."""

import types

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

from idlearn.evaluators import ridge_probe
from idlearn.training import eval as eval_lib

IDS, GROUPS, ROWS = 6, 4, 5  # ids x tracklets per id x frames per tracklet


def _codes(seed=0):
  """ids, groups [n]; an identity code (class centre + noise), a code of
  pure noise, and a code whose only identity signal is a per-tracklet
  offset (fit tracklets say nothing about test tracklets)."""
  rng = np.random.default_rng(seed)
  ids = np.repeat(np.arange(IDS), GROUPS * ROWS)
  groups = np.repeat(np.arange(IDS * GROUPS), ROWS) + 100
  centres = rng.normal(size=(IDS, 8)) * 3.0
  ident = centres[ids] + 0.3 * rng.normal(size=(len(ids), 8))
  noise = rng.normal(size=(len(ids), 8))
  offsets = rng.normal(size=(IDS * GROUPS, 8)) * 3.0
  tracklet = offsets[groups - 100] + 0.1 * rng.normal(size=(len(ids), 8))
  return ids, groups, ident, noise, tracklet


def test_alternate_groups_splits_each_ids_groups():
  ids = np.array([0, 0, 0, 0, 1, 1, 1, 2])
  groups = np.array([7, 7, 3, 9, 5, 4, 5, 1])
  # id 0: groups 3, 7, 9 -> fit, test, fit; id 1: 4, 5 -> fit, test;
  # id 2: one group -> fit
  want = [False, False, True, True, False, True, False, True]
  np.testing.assert_array_equal(ridge_probe.alternate_groups(ids, groups), want)


def test_matches_sklearn_ridge_classifier():
  ids, groups, ident, noise, _ = _codes(1)
  x = ident[:, :3] + noise[:, :3]  # a hard problem: some errors
  fit = ridge_probe.alternate_groups(ids, groups)
  alpha = 0.3
  got = ridge_probe.evaluate(x[fit], ids[fit], x[~fit], ids[~fit],
                             alphas=(alpha,))  # fmt: skip
  mu, sd = x[fit].mean(0), x[fit].std(0)
  clf = RidgeClassifier(alpha=alpha * fit.sum()).fit((x[fit] - mu) / sd,
                                                     ids[fit])  # fmt: skip
  want = clf.score((x[~fit] - mu) / sd, ids[~fit])
  assert got["top1"] == pytest.approx(want, abs=1e-12)
  assert 0.3 < got["top1"] < 0.95 and np.isnan(got["cv_top1"])
  assert got["chance"] == pytest.approx(1 / IDS)


def test_known_answers_identity_noise_and_tracklet_offsets():
  ids, groups, ident, noise, tracklet = _codes(2)
  fit = ridge_probe.alternate_groups(ids, groups)

  def top1(x):
    return ridge_probe.evaluate(
      x[fit], ids[fit], x[~fit], ids[~fit], groups=groups[fit]
    )

  assert top1(ident)["top1"] == 1.0
  # noise and tracklet-only signal: no better than chance (1/6) by much
  assert top1(noise)["top1"] < 0.4
  res = top1(tracklet)
  assert res["top1"] < 0.4
  # folds leave out whole tracklets: the cross-validated accuracy is low
  # too (row folds would see each test tracklet's twin rows: ~1)
  assert res["cv_top1"] < 0.4
  with pytest.raises(ValueError, match="x_fit and x_test"):
    ridge_probe.evaluate(ident, ids, ident[:, :3], ids)


class _Features:
  """A RunEncoder stand-in: "emb" = the first pixel, "eval" its double."""

  def __init__(self, method):
    self.method = method

  def __call__(self, state, images, **kw):
    assert not kw.get("flip")
    emb = images[:, 0, 0].astype(np.float32)
    return {"emb": emb, "eval": 2 * emb}


def _evaluator(method, **cfg):
  (ev,) = eval_lib.make_evaluators(
    {"probe": {"type": "code_probe", "data": "mars", **cfg}},
    _Features(method),
  )
  return ev


def test_the_evaluator_probes_each_code_of_the_method():
  ids, groups, ident, noise, _ = _codes(3)
  images = np.zeros((len(ids), 1, 1, 16), np.uint8)
  images[:, 0, 0, :8] = np.clip(ident * 10 + 128, 0, 255)
  images[:, 0, 0, 8:] = np.clip(noise * 10 + 128, 0, 255)

  def probe_codes(params, feats):
    assert params == "params"
    return {"identity": feats["eval"][:, :8], "motion": feats["emb"][:, 8:]}

  method = types.SimpleNamespace(name="x", probe_codes=probe_codes)
  ev = _evaluator(method)
  ev._data = (images, ids, groups)
  state = types.SimpleNamespace(params="params", ema_params=None)
  out = ev.run(state)
  assert set(out) == {
    "eval/probe/identity/top1", "eval/probe/motion/top1", "eval/probe/chance",
  }  # fmt: skip
  assert out["eval/probe/identity/top1"] == 1.0
  assert out["eval/probe/motion/top1"] < 0.4
  assert out["eval/probe/chance"] == pytest.approx(1 / IDS)
  # a method without the hook: its retrieval feature and pooled feature
  ev = _evaluator(types.SimpleNamespace(name="simclr"))
  ev._data = (images, ids, groups)
  assert set(ev.run(state)) == {
    "eval/probe/eval/top1", "eval/probe/emb/top1", "eval/probe/chance",
  }  # fmt: skip


def test_the_evaluator_config_checks_and_frame_spacing():
  with pytest.raises(ValueError, match="flip_test = True"):
    _evaluator(None, flip_test=True)
  with pytest.raises(ValueError, match="group_by"):
    _evaluator(None, group_by="camera")
  with pytest.raises(ValueError, match="folds = 1"):
    _evaluator(None, folds=1)
  groups = np.array([5] * 10 + [2] * 3 + [9])
  keep = eval_lib._spaced(groups, 4)
  np.testing.assert_array_equal(np.flatnonzero(keep[:10]), [0, 3, 6, 9])
  assert keep[10:].all() and eval_lib._spaced(groups, 0).all()

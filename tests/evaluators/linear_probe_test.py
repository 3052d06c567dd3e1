"""linear_probe against scikit-learn's LogisticRegression optimum."""

import numpy as np
import pytest
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression

from idlearn.evaluators import linear_probe


def _classes(seed, n, c, d, noise):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((c, d)) * 1.5
  y = rng.integers(0, c, n)
  return centres[y] + noise * rng.standard_normal((n, d)), y


def test_linear_probe_matches_sklearn_optimum():
  x, y = _classes(2, 440, c=5, d=8, noise=1.6)
  x, y, xt, yt = x[:240], y[:240], x[240:], y[240:]
  got = linear_probe.evaluate(x, y, xt, yt, weight_decays=(1e-2,))
  # Same objective: sklearn minimises C sum(CE) + |W|^2 / 2.
  xs = (x - x.mean(0)) / (x.std(0) + 1e-6)
  clf = LogisticRegression(C=1 / (1e-2 * len(x)), tol=1e-10, max_iter=10_000)
  clf.fit(xs, y)
  logp = log_softmax(xs @ clf.coef_.T + clf.intercept_, axis=1)
  want_loss = -logp[np.arange(len(y)), y].mean() + 0.5e-2 * (clf.coef_**2).sum()
  assert got["loss"] == pytest.approx(want_loss, rel=1e-5)
  xts = (xt - x.mean(0)) / (x.std(0) + 1e-6)
  assert got["top1"] == pytest.approx(clf.score(xts, yt), abs=0.011)
  assert 0.4 < got["top1"] < 0.95 and got["top5"] == 1.0


def test_linear_probe_selects_on_held_out_split():
  # Same shapes as above: one compilation of the jitted fit.
  x, y = _classes(4, 440, c=5, d=8, noise=1.2)
  x, y, xt, yt = x[:240], y[:240], x[240:], y[240:]
  got = linear_probe.evaluate(x, y, xt, yt, weight_decays=(1e-4, 10.0))
  # A weight decay of 10 shrinks the probe to near chance on held-out data.
  assert got["weight_decay"] == 1e-4
  assert got["val_top1"] > 0.5 and got["top1"] > 0.5
  with pytest.raises(ValueError, match="test_feats"):
    linear_probe.evaluate(x, y, xt[:, :3], yt)

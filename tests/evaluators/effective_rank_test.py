"""effective_rank against a float64 NumPy reference (eigenvalues of the
scatter matrix) and hand cases; its train-loop evaluator."""

import math

import numpy as np
import pytest

from idlearn.evaluators.effective_rank import effective_rank
from idlearn.training import eval as eval_lib


def _ref(x, center=True, normalize=False):
  """Singular values as square roots of the eigenvalues of X^T X."""
  x = np.asarray(x, np.float64)
  if normalize:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
  if center:
    x = x - x.mean(0)
  eig = np.clip(np.linalg.eigvalsh(x.T @ x), 0, None)
  s = np.sqrt(eig)
  s = s[s > 1e-9 * s.max()]
  p = s / s.sum()
  return math.exp(-np.sum(p * np.log(p)))


@pytest.mark.parametrize(
  "center, normalize", [(True, False), (False, False), (True, True)]
)
def test_matches_the_scatter_matrix_reference(center, normalize):
  rng = np.random.default_rng(0)
  # anisotropic: scales 1 .. 1/8 on 8 dims, plus an offset (centring matters)
  x = rng.normal(size=(50, 8)) / np.arange(1, 9) + 3.0
  got = effective_rank(x, center=center, normalize=normalize)
  np.testing.assert_allclose(got, _ref(x, center, normalize), rtol=1e-9)
  assert 1 < got < 8


def test_hand_cases():
  # Orthogonal centred columns of norms 3 sqrt2 and sqrt2: p = (3/4, 1/4),
  # erank = exp(H) = 1 / (0.75^0.75 * 0.25^0.25) = 1.7548...
  x = np.array([[3, 0], [-3, 0], [0, 1], [0, -1]], np.float64)
  want = 1 / (0.75**0.75 * 0.25**0.25)
  assert effective_rank(x) == pytest.approx(want, rel=1e-12)
  # rank 1 (every row on one line through the mean): 1, also from float32
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(200, 1)), rng.normal(size=(1, 16))
  assert effective_rank(a @ b) == pytest.approx(1.0, abs=1e-9)
  assert effective_rank((a @ b + 5).astype(np.float32)) == pytest.approx(
    1.0, abs=1e-3
  )
  # isotropic: a flat spectrum gives d exactly, Gaussian data nearly d
  q, _ = np.linalg.qr(rng.normal(size=(64, 64)))
  flat = q[:, 1:9] * 10  # orthogonal columns of one norm (not centred)
  assert effective_rank(flat, center=False) == pytest.approx(8, rel=1e-12)
  gauss = rng.normal(size=(20_000, 8))
  assert 7.9 < effective_rank(gauss) <= 8
  # every row the same: nothing spread, 0
  assert effective_rank(np.tile([[0.1, 0.7, 0.3]], (5, 1))) == 0.0
  with pytest.raises(ValueError, match="non-empty"):
    effective_rank(np.zeros((0, 4)))


def test_evaluator_reports_the_rank_of_the_features_and_of_unit_rows():
  rng = np.random.default_rng(2)
  feats = rng.normal(size=(30, 6)) * np.arange(1, 7) + 1.0
  images = np.zeros((30, 4, 2, 3), np.uint8)
  seen = {}

  def features(state, x, **kw):
    seen.update(kw, n=len(x))
    return {"eval": feats, "emb": -feats}

  (ev,) = eval_lib.make_evaluators(
    {"rank": {"type": "effective_rank", "data": "pku_reid", "split": "val",
              "image_size": (4, 2)}},
    features,
  )  # fmt: skip
  ev._data = images  # the split's images (not read from disk here)
  got = ev.run(state=None)
  assert got == {
    "eval/rank/effective_rank": pytest.approx(_ref(feats), rel=1e-9),
    "eval/rank/effective_rank_unit": pytest.approx(
      _ref(feats, normalize=True), rel=1e-9
    ),
  }
  assert seen["n"] == 30 and seen["image_size"] == (4, 2)
  with pytest.raises(ValueError, match="split"):
    eval_lib.make_evaluators(
      {"rank": {"type": "effective_rank", "data": "pku_reid"}}, features
    )

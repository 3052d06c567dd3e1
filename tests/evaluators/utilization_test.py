"""Metrix's utilization against a float64 NumPy loop over every pair."""

import numpy as np
import pytest

from idlearn.evaluators import utilization


def _ref(test, train, normalize=True):
  if normalize:
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
  nearest = [min(np.sum((q - x) ** 2) for x in train) for q in test]
  return float(np.mean(nearest))


@pytest.mark.parametrize("normalize", [True, False])
def test_utilization_is_the_mean_squared_distance_to_the_nearest(normalize):
  rng = np.random.default_rng(0)
  train, test = rng.normal(size=(30, 5)), rng.normal(size=(11, 5))
  got = utilization.utilization(test, train, normalize=normalize)
  np.testing.assert_allclose(got, _ref(test, train, normalize), rtol=1e-10)
  # the faiss path (float32) agrees to float32 rounding, where installed
  pytest.importorskip("faiss")
  fast = utilization.utilization(
    test, train, normalize=normalize, backend="faiss"
  )
  np.testing.assert_allclose(fast, got, rtol=1e-5)


def test_utilization_is_zero_on_the_training_set_and_scale_free():
  rng = np.random.default_rng(1)
  train = rng.normal(size=(20, 4))
  assert utilization.utilization(train[:5] * 3.0, train) == pytest.approx(0)
  test = rng.normal(size=(6, 4))
  assert 0 < utilization.utilization(test, train) <= 4.0  # unit features
  with pytest.raises(ValueError, match="non-empty"):
    utilization.utilization(np.zeros((0, 4)), train)

"""CaCL's camera curriculum: MMD vs a brute-force float64 reference, and
the camera order on a synthetic case with one source-like camera."""

import itertools

import numpy as np
import pytest

from idlearn.mining import curriculum

SCALES = (0.5, 1.0, 2.0)


def _np_median_distance(x, y):
  pooled = np.concatenate([x, y]).astype(np.float64)
  d = [np.linalg.norm(a - b) for a, b in itertools.combinations(pooled, 2)]
  return float(np.median(d))


def _np_mmd2(x, y, sigma, scales):
  """Pair by pair: mean k(x, x') + mean k(y, y') - 2 mean k(x, y)."""

  def k(a, b):
    d2 = float(np.sum((a - b) ** 2))
    return np.mean([np.exp(-d2 / (2 * (s * sigma) ** 2)) for s in scales])

  def mean(a, b):
    return np.mean([k(u, v) for u in a for v in b])

  x, y = x.astype(np.float64), y.astype(np.float64)
  return mean(x, x) + mean(y, y) - 2 * mean(x, y)


def _sets(seed=0, shift=0.7):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(17, 5)).astype(np.float32)
  y = (rng.normal(size=(13, 5)) + shift).astype(np.float32)
  return x, y


def test_mmd2_matches_float64_reference_with_the_median_heuristic():
  x, y = _sets()
  sigma = _np_median_distance(x, y)
  assert curriculum.median_bandwidth(x, y) == pytest.approx(sigma, rel=1e-12)
  want = _np_mmd2(x, y, sigma, SCALES)
  got = curriculum.mmd2(x, y, scales=SCALES)
  np.testing.assert_allclose(got, want, rtol=1e-10)
  # a given bandwidth is used as is
  got = curriculum.mmd2(x, y, bandwidth=0.8, scales=SCALES)
  np.testing.assert_allclose(got, _np_mmd2(x, y, 0.8, SCALES), rtol=1e-10)


def test_mmd2_is_zero_for_identical_sets_and_grows_with_a_shift():
  x, _ = _sets()
  assert curriculum.mmd2(x, x.copy()) == 0.0
  # the same points in another order: the same distribution
  assert curriculum.mmd2(x, x[::-1]) == pytest.approx(0.0, abs=1e-12)
  values = [curriculum.mmd2(x, x + s, bandwidth=2.0) for s in (0.3, 1, 3)]
  assert 0 < values[0] < values[1] < values[2]
  with pytest.raises(ValueError, match="width"):
    curriculum.mmd2(x, x[:, :3])
  with pytest.raises(ValueError, match="scales"):
    curriculum.mmd2(x, x, scales=(1.0, 0.0))


def _camera_case(seed=0):
  """Source and 4 target cameras: camera 2 is drawn like the source, the
  others have their features shifted along extra dimensions by 3, 6, 9."""
  rng = np.random.default_rng(seed)

  def draw(n, shift):
    z = rng.normal(size=(n, 8))
    offset = np.zeros((n, 4))
    offset[:, 0] = shift
    return np.concatenate([z, offset], 1).astype(np.float32)

  source = draw(120, 0.0)
  shifts = {0: 3.0, 1: 6.0, 2: 0.0, 3: 9.0}
  cams = np.repeat(np.array([1, 3, 0, 2]), 40)  # not sorted by camera
  target = np.concatenate([draw(40, shifts[c]) for c in (1, 3, 0, 2)])
  return source, target, cams


def test_camera_order_puts_the_source_like_camera_first():
  source, target, cams = _camera_case()
  order, dist = curriculum.camera_order(source, target, cams, seed=0)
  np.testing.assert_array_equal(order, [2, 0, 1, 3])
  assert np.all(np.diff(dist) > 0) and dist[0] >= 0
  # each distance is mmd2 on unit features with the pooled median bandwidth
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
  s, t = unit(source.astype(np.float64)), unit(target.astype(np.float64))
  sigma = curriculum.median_bandwidth(s, t)
  for c, d in zip(order, dist, strict=True):
    want = curriculum.mmd2(s, t[cams == c], bandwidth=sigma)
    np.testing.assert_allclose(d, want, rtol=1e-9)
  # subsampling (seeded) keeps the order on this case
  order2, _ = curriculum.camera_order(
    source, target, cams, max_images=30, seed=1
  )
  np.testing.assert_array_equal(order2, [2, 0, 1, 3])


def test_stage_cameras_grow_by_one_camera_per_stage():
  order = np.array([4, 0, 2])
  assert curriculum.stage_cameras(order, -1).tolist() == []
  assert curriculum.stage_cameras(order, 0).tolist() == [4]
  assert curriculum.stage_cameras(order, 1).tolist() == [4, 0]
  assert curriculum.stage_cameras(order, 5).tolist() == [4, 0, 2]

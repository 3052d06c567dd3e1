"""neighbors.search / farthest: the exact path against a float64 argsort,
the faiss path against the exact path, and the fallback without faiss."""

import sys

import numpy as np
import pytest

from idlearn.evaluators import neighbors


def _feats(seed, n, d=8, dup=0):
  x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
  x[n - dup :] = x[:dup]  # exact duplicates: tied neighbours
  return x


def _dist64(q, x, metric):
  """[m, n] float64: squared L2, or -inner product (smaller is nearer)."""
  q, x = q.astype(np.float64), x.astype(np.float64)
  if metric == "ip":
    return -(q @ x.T)
  return ((q[:, None] - x[None]) ** 2).sum(-1)


def test_top_k_breaks_ties_by_index():
  rng = np.random.default_rng(0)
  d = rng.integers(0, 4, (50, 40)).astype(np.float32)  # many ties
  d[3, 5] = np.inf
  for k in (1, 7, 39, 40):
    want = np.argsort(d, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(neighbors.top_k(d, k), want)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_exact_matches_argsort(metric, exclude_self, monkeypatch):
  monkeypatch.setattr(neighbors, "_CHUNK_ELEMENTS", 7 * 60)  # 7-row chunks
  x = _feats(1, 60, dup=5).astype(np.float64)
  d = _dist64(x, x, metric)
  if exclude_self:
    np.fill_diagonal(d, np.inf)
  # Duplicates tie exactly only in exact arithmetic: use a float64 input
  # and round the reference so that float rounding does not decide.
  want = np.argsort(np.round(d, 9), axis=1, kind="stable")[:, :6]
  vals, idx = neighbors.search(
    x, x, 6, metric=metric, exclude_self=exclude_self, backend="exact"
  )
  np.testing.assert_array_equal(idx, want)
  sign = -1.0 if metric == "ip" else 1.0
  np.testing.assert_allclose(
    sign * vals, np.take_along_axis(d, want, 1), atol=1e-9
  )
  far_vals, far = neighbors.farthest(x, x, metric=metric, backend="exact")
  np.testing.assert_array_equal(far, np.argmax(_dist64(x, x, metric), 1))
  np.testing.assert_allclose(
    sign * far_vals, _dist64(x, x, metric).max(1), atol=1e-9
  )


def _same_up_to_ties(q, x, metric, got, want, atol):
  """Equal distances at each place; the faiss neighbours are as close."""
  (gv, gi), (wv, _) = got, want
  np.testing.assert_allclose(gv, wv, atol=atol)
  d = _dist64(q, x, metric)
  sign = -1.0 if metric == "ip" else 1.0
  np.testing.assert_allclose(np.take_along_axis(d, gi, 1), sign * wv, atol=atol)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_faiss_matches_exact(metric, monkeypatch):
  pytest.importorskip("faiss")
  monkeypatch.setattr(neighbors, "FAISS_MIN_PAIRS", 0)  # auto -> faiss
  x, q = _feats(2, 500, d=16, dup=20), _feats(3, 70, d=16)
  assert neighbors.choose_backend(len(q), len(x)) == "faiss"
  for k in (1, 10, 64):
    got = neighbors.search(q, x, k, metric=metric)
    want = neighbors.search(q, x, k, metric=metric, backend="exact")
    _same_up_to_ties(q, x, metric, got, want, 1e-4)
    # Exact ties: the duplicates (x[480 + i] == x[i]); the rest are float32
    # near-ties (faiss expands |q - x|^2 in float32), a few swapped pairs.
    assert np.mean(got[1] % 480 == want[1] % 480) > 0.999
    got = neighbors.search(x, x, k, metric=metric, exclude_self=True)
    want = neighbors.search(
      x, x, k, metric=metric, exclude_self=True, backend="exact"
    )
    _same_up_to_ties(x, x, metric, got, want, 1e-4)
    assert np.mean(got[1] % 480 == want[1] % 480) > 0.999
    assert not (got[1] == np.arange(len(x))[:, None]).any()
  got = neighbors.farthest(q, x, metric=metric)
  want = neighbors.farthest(q, x, metric=metric, backend="exact")
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(got[1], want[1])


def test_without_faiss_warns_once_and_stays_exact(monkeypatch):
  monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss fails
  monkeypatch.setattr(neighbors, "FAISS_MIN_PAIRS", 0)
  neighbors._faiss.cache_clear()
  try:
    x = _feats(4, 80)
    with pytest.warns(UserWarning, match="faiss is not installed"):
      got = neighbors.search(x, x, 5, backend="faiss")
    want = neighbors.search(x, x, 5, backend="exact")
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.warns() as record:  # no second warning
      neighbors.search(x, x, 5)
      neighbors.farthest(x, x)
      import warnings

      warnings.warn("sentinel", UserWarning, stacklevel=1)
    assert [str(r.message) for r in record] == ["sentinel"]
  finally:
    neighbors._faiss.cache_clear()


def test_bad_inputs():
  x = _feats(5, 10)
  with pytest.raises(ValueError, match="share d"):
    neighbors.search(x, x[:, :3], 2)
  with pytest.raises(ValueError, match="k=10"):
    neighbors.search(x, x, 10, exclude_self=True)
  with pytest.raises(ValueError, match="metric"):
    neighbors.search(x, x, 2, metric="cosine")
  with pytest.raises(ValueError, match="backend"):
    neighbors.search(x, x, 2, backend="gpu")
  with pytest.raises(ValueError, match="exclude_self"):
    neighbors.search(x[:4], x, 2, exclude_self=True)

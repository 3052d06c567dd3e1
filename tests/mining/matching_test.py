"""ISR frame matching: Hungarian vs brute force, Sinkhorn, jit callback."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn.mining import matching


def _brute_force_best(sim):
  """Best total weight over all one-to-one matchings of min(m, n) pairs."""
  m, n = sim.shape
  if m <= n:
    return max(
      sum(sim[i, c] for i, c in enumerate(cols))
      for cols in itertools.permutations(range(n), m)
    )
  return _brute_force_best(sim.T)


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 3)])
def test_hungarian_matches_brute_force(shape):
  sim = np.random.default_rng(sum(shape)).uniform(-1, 1, size=shape)
  rows, cols = matching.max_weight_matching(sim)
  assert len(rows) == min(shape)
  assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
  np.testing.assert_allclose(
    sim[rows, cols].sum(), _brute_force_best(sim), rtol=1e-12
  )


def test_threshold_and_masks():
  sim = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.1], [0.0, 0.1, 0.8]])
  rows, cols = matching.max_weight_matching(sim)
  assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1, 2]
  rows, cols = matching.max_weight_matching(sim, min_similarity=0.5)
  assert rows.tolist() == [0, 2] and cols.tolist() == [0, 2]
  rows, cols = matching.max_weight_matching(
    sim, valid_a=np.array([True, True, False])
  )
  # Without row 2, column 2 is free: row 1 keeps its best remaining column.
  assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]
  with pytest.raises(ValueError, match="finite"):
    matching.max_weight_matching(np.array([[np.nan]]))
  with pytest.raises(ValueError, match="valid_b"):
    matching.max_weight_matching(sim, valid_b=np.ones(2, bool))


def test_match_embeddings_recovers_a_permutation():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(12, 16))
  perm = rng.permutation(12)
  b = a[perm] + 0.05 * rng.normal(size=(12, 16))  # frame B = shuffled A
  partner, score = matching.match_embeddings(a, b)
  np.testing.assert_array_equal(perm[partner], np.arange(12))
  assert (score > 0.9).all()
  partner, _ = matching.match_embeddings(a[:3], b, min_similarity=0.99999)
  assert (partner == -1).all()
  with pytest.raises(ValueError, match="emb_a"):
    matching.match_embeddings(a, b[:, :3])


def test_callback_inside_jit_equals_host():
  sim = np.random.default_rng(3).normal(size=(7, 5)).astype(np.float32)
  got = jax.jit(matching.matching_callback)(jnp.asarray(sim))
  rows, cols = matching.max_weight_matching(sim)
  want = np.full(7, -1)
  want[rows] = cols
  np.testing.assert_array_equal(got, want)


def test_sinkhorn_marginals_and_low_temperature_limit():
  rng = np.random.default_rng(4)
  sim = rng.uniform(-1, 1, size=(6, 6))
  plan = jax.jit(
    lambda s: matching.sinkhorn(s, temperature=0.02, num_iters=1000)
  )(jnp.asarray(sim, jnp.float32))
  np.testing.assert_allclose(plan.sum(1), np.ones(6), atol=1e-3)
  np.testing.assert_allclose(plan.sum(0), np.ones(6), atol=1e-3)
  rows, cols = matching.max_weight_matching(sim)
  np.testing.assert_array_equal(matching.mutual_argmax(plan)[rows], cols)


def test_sinkhorn_rectangular_with_padding():
  rng = np.random.default_rng(5)
  sim = rng.uniform(-1, 1, size=(4, 6))
  vb = np.array([True, True, True, True, True, False])
  plan = matching.sinkhorn(
    jnp.asarray(sim, jnp.float32), temperature=0.02, num_iters=1000, valid_b=vb
  )
  np.testing.assert_allclose(plan.sum(1), np.ones(4), atol=1e-3)
  assert float(plan[:, 5].sum()) == 0.0
  assert float(plan.sum(0).max()) <= 1 + 1e-3
  rows, cols = matching.max_weight_matching(sim, valid_b=vb)
  np.testing.assert_array_equal(matching.mutual_argmax(plan)[rows], cols)


@pytest.mark.parametrize("method", ["hungarian", "sinkhorn"])
def test_align_by_matching_inside_jit(method):
  rng = np.random.default_rng(6)
  a = rng.normal(size=(10, 16))
  perm = rng.permutation(10)
  b = a[perm] + 0.1 * rng.normal(size=(10, 16))
  b[perm == 3] = rng.normal(size=16)  # instance 3 left frame B: a stranger
  fn = jax.jit(
    lambda x, y: matching.align_by_matching(
      x, y, method=method, min_similarity=0.5
    )
  )
  partner, valid = fn(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  inverse = np.argsort(perm)  # frame-B row of each frame-A instance
  ok = np.arange(10) != 3
  np.testing.assert_array_equal(np.asarray(partner)[ok], inverse[ok])
  assert np.asarray(valid).tolist() == ok.tolist()
  with pytest.raises(ValueError, match="method"):
    matching.align_by_matching(a, b, method="auction")


def test_align_by_matching_respects_the_allowed_mask():
  rng = np.random.default_rng(5)
  a = rng.normal(size=(6, 4)).astype(np.float32)
  cams_a = np.array([0, 0, 0, 1, 1, 1])
  b = a.copy()  # each row's best partner is itself, of the same camera
  cams_b = cams_a.copy()
  allowed = cams_a[:, None] != cams_b[None, :]
  for method in ("hungarian", "sinkhorn"):
    partner, valid = jax.jit(
      lambda x, y, m, method=method: matching.align_by_matching(
        x, y, method=method, allowed=m
      )
    )(a, b, allowed)
    partner, valid = np.asarray(partner), np.asarray(valid)
    assert (cams_b[partner[valid]] != cams_a[valid]).all(), method
    # Brute force over the cross-camera permutations.
    sim = (
      a @ b.T / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    )
    best = max(
      (p for p in itertools.permutations(range(6))
       if all(allowed[i, p[i]] for i in range(6))),
      key=lambda p: sum(sim[i, p[i]] for i in range(6)),
    )  # fmt: skip
    if method == "hungarian":
      assert valid.all()
      np.testing.assert_array_equal(partner, best)
  with pytest.raises(ValueError, match="allowed"):
    matching.align_by_matching(a, b, allowed=allowed[:3])

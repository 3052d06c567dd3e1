"""ISR reliability-guided contrastive loss vs a float64 NumPy reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import sharding
from idlearn.losses import reliability

RTOL = 1e-5


def _np_unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_loss(z1, z2, valid, t=0.07, sigma=0.5):
  z1, z2 = _np_unit(z1), _np_unit(z2)
  idx = np.flatnonzero(valid)
  a, b = z1[idx], z2[idx]
  s = np.sum(a * b, axis=1)
  w = len(idx) * np.exp(s / sigma) / np.exp(s / sigma).sum()

  def nll(q, k):
    logits = q @ k.T / t
    logits -= logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -np.diag(logp)

  return np.mean(w * 0.5 * (nll(a, b) + nll(b, a)))


def _inputs(b=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(b, d))
  z2 = z1 + rng.normal(size=(b, d)) * rng.uniform(0.1, 2.0, size=(b, 1))
  valid = rng.uniform(size=b) > 0.25
  return z1, z2, valid


def test_matches_numpy_formula():
  z1, z2, valid = _inputs()
  got, aux = jax.jit(reliability.reliability_contrastive)(
    jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), valid
  )
  np.testing.assert_allclose(got, _np_loss(z1, z2, valid), rtol=RTOL)
  s = np.sum(_np_unit(z1) * _np_unit(z2), 1)[valid]
  np.testing.assert_allclose(aux["pos_sim"], s.mean(), rtol=RTOL)


def test_large_sigma_is_unweighted_symmetric_infonce():
  z1, z2, _ = _inputs(seed=1)
  valid = np.ones(16, bool)
  got, _ = reliability.reliability_contrastive(
    jnp.asarray(z1), jnp.asarray(z2), valid, sigma=1e6, temperature=0.2
  )
  np.testing.assert_allclose(
    got, _np_loss(z1, z2, valid, t=0.2, sigma=1e12), rtol=RTOL
  )


def test_unreliable_pair_gets_less_gradient_than_unweighted():
  z1, z2, _ = _inputs(seed=2)
  z2[0] = -z1[0]  # a wrong match: lowest similarity in the batch
  valid = np.ones(16, bool)

  def grad_norm(sigma):
    g = jax.jit(
      jax.grad(
        lambda a: reliability.reliability_contrastive(
          a, jnp.asarray(z2), valid, sigma=sigma
        )[0]
      )
    )(jnp.asarray(z1))
    return float(jnp.linalg.norm(g[0]))

  assert grad_norm(0.2) < 0.5 * grad_norm(1e6)


def test_true_pairs_score_lower_than_shuffled():
  z1, _, _ = _inputs(seed=3)
  z2 = z1 + 0.1 * np.random.default_rng(0).normal(size=z1.shape)
  valid = np.ones(16, bool)
  good, aux = reliability.reliability_contrastive(
    jnp.asarray(z1), jnp.asarray(z2), valid
  )
  bad, _ = reliability.reliability_contrastive(
    jnp.asarray(z1), jnp.asarray(z2[::-1]), valid
  )
  assert float(good) < float(bad)
  assert float(aux["top1"]) == 1.0


def test_sharded_equals_global():
  z1, z2, valid = _inputs()
  args = [jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), valid]
  mesh = sharding.make_data_mesh()
  f = sharding.shard_loss(reliability.reliability_contrastive, mesh)
  vg = lambda fn: jax.jit(
    jax.value_and_grad(lambda a, b: fn(a, b, valid), (0, 1), has_aux=True)
  )(*args[:2])
  got, g_got = vg(f)
  want, g_want = vg(reliability.reliability_contrastive)
  chex.assert_trees_all_close(got, want, rtol=RTOL)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-7)


def test_finite_at_zero_embeddings_and_no_valid_pair():
  z = jnp.zeros((8, 4))
  for valid in (np.ones(8, bool), np.zeros(8, bool)):
    loss, g = jax.jit(
      jax.value_and_grad(
        lambda a, v=valid: reliability.reliability_contrastive(a, a, v)[0]
      )
    )(z)
    assert np.isfinite(float(loss)) and np.isfinite(np.asarray(g)).all()


def test_bad_shapes():
  z = jnp.zeros((8, 4))
  with pytest.raises(ValueError, match="z1 and z2"):
    reliability.reliability_contrastive(z, z[:, :3], np.ones(8, bool))
  with pytest.raises(ValueError, match="valid"):
    reliability.reliability_contrastive(z, z, np.ones(7, bool))

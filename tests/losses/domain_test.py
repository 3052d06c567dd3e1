"""CaCL camera-diversity and DomainMix domain losses vs NumPy formulas."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import sharding
from idlearn.losses import domain

RTOL = 1e-5


def _np_cd(emb, ids, cams, t=0.1):
  q = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  s = q @ q.T / t
  losses = []
  for i in range(len(q)):
    pos = [
      p for p in range(len(q)) if ids[p] == ids[i] >= 0 and cams[p] != cams[i]
    ]
    if not pos:
      continue
    others = np.delete(np.arange(len(q)), i)
    lse = np.log(np.sum(np.exp(s[i, others])))
    losses.append(-np.mean([s[i, p] - lse for p in pos]))
  return np.mean(losses), len(losses) / len(q)


def _cd_inputs(b=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  ids = np.repeat(np.arange(4), 4)
  ids[-2:] = -1  # un-clustered
  cams = rng.integers(0, 3, b)
  cams[:4] = 0  # identity 0 seen by one camera only: no cross-cam positive
  emb = rng.normal(size=(b, d)) + np.eye(d)[np.maximum(ids, 0) % d]
  return emb, ids, cams


def test_camera_diversity_matches_numpy_formula():
  emb, ids, cams = _cd_inputs()
  want, frac = _np_cd(emb, ids, cams)
  got, aux = jax.jit(domain.camera_diversity)(
    jnp.asarray(emb, jnp.float32), ids, cams
  )
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(aux["frac_anchors"], frac, rtol=RTOL)
  assert frac < 1.0  # the single-camera identity and -1s are skipped


def test_camera_diversity_falls_when_identities_collapse():
  emb, ids, cams = _cd_inputs(seed=1)
  base, _ = domain.camera_diversity(jnp.asarray(emb), ids, cams)
  tight = emb.copy()
  for c in range(1, 4):
    tight[ids == c] = tight[ids == c].mean(0)
  lower, _ = domain.camera_diversity(jnp.asarray(tight), ids, cams)
  assert float(lower) < float(base)


def test_camera_diversity_sharded_equals_global():
  emb, ids, cams = _cd_inputs()
  args = [jnp.asarray(emb, jnp.float32), jnp.asarray(ids), jnp.asarray(cams)]
  mesh = sharding.make_data_mesh()
  f = sharding.shard_loss(domain.camera_diversity, mesh)
  vg = lambda fn: jax.jit(
    jax.value_and_grad(lambda e: fn(e, *args[1:]), has_aux=True)
  )(args[0])
  got, g_got = vg(f)
  want, g_want = vg(domain.camera_diversity)
  chex.assert_trees_all_close(got, want, rtol=RTOL)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-7)


def test_camera_diversity_finite_and_bad_shapes():
  ids, cams = jnp.array([0, 0, 1, 1]), jnp.array([0, 1, 0, 1])
  for emb in (jnp.zeros((4, 3)), jnp.ones((4, 3))):
    loss, g = jax.jit(
      jax.value_and_grad(lambda e: domain.camera_diversity(e, ids, cams)[0])
    )(emb)
    assert np.isfinite(float(loss)) and np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="cams"):
    domain.camera_diversity(jnp.zeros((4, 3)), ids, cams[:3])


def _np_log_softmax(z):
  z = z - z.max(1, keepdims=True)
  return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_domain_balance_matches_formula_and_authors_constant():
  z = np.random.default_rng(0).normal(size=(16, 2)) * 2
  lp = _np_log_softmax(z)
  want = np.mean(np.sum(np.exp(lp) * lp + 0.5, axis=1))
  got, aux = jax.jit(domain.domain_balance)(jnp.asarray(z, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(aux["domain_entropy"], 1 - want, rtol=RTOL)
  # Uniform prediction is the minimum: 1 - log 2.
  best, _ = domain.domain_balance(jnp.zeros((4, 2)))
  np.testing.assert_allclose(best, 1 - np.log(2), rtol=RTOL)


def test_domain_classification_matches_formula():
  z = np.random.default_rng(1).normal(size=(16, 2))
  d = np.random.default_rng(2).integers(0, 2, 16)
  want = -np.mean(_np_log_softmax(z)[np.arange(16), d])
  got, aux = domain.domain_classification(jnp.asarray(z, jnp.float32), d)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(aux["accuracy"], np.mean(z.argmax(1) == d))


@pytest.mark.parametrize("which", ["balance", "classification"])
def test_domain_losses_sharded_equal_global(which):
  z = jnp.asarray(np.random.default_rng(3).normal(size=(16, 2)), jnp.float32)
  d = jnp.asarray(np.random.default_rng(4).integers(0, 2, 16))
  if which == "balance":
    fn, args = domain.domain_balance, (z,)
  else:
    fn, args = domain.domain_classification, (z, d)
  f = sharding.shard_loss(fn, sharding.make_data_mesh())
  vg = lambda g: jax.jit(
    jax.value_and_grad(lambda x: g(x, *args[1:]), has_aux=True)
  )(z)
  (got, g_got), (want, g_want) = vg(f), vg(fn)
  chex.assert_trees_all_close(got, want, rtol=RTOL)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-8)


def test_domain_bad_shapes():
  with pytest.raises(ValueError, match="domain_logits"):
    domain.domain_balance(jnp.zeros((4, 1)))
  with pytest.raises(ValueError, match="domains"):
    domain.domain_classification(jnp.zeros((4, 2)), jnp.zeros(3, int))

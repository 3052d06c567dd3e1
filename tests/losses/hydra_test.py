"""losses.hydra against a float64 NumPy reference of the author's
`multipos_ce_loss` (literal: row-centred logits, exp, masks), hand-checked
cases, SupCon as its identical-pairs case, and 8 devices == 1 device."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import losses, sharding
from idlearn.losses import contrastive

N, D = 16, 6
RTOL = 1e-5


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_hydra(q, k, gate, y1, y2, t):
  """SimLAP.disparate_loss + multipos_ce_loss, written out in float64."""
  logits = (_unit(q) * gate * gate) @ _unit(k).T / t  # [n, n]
  c2 = y2[:, None] == y1[None, :]  # positives: the paired class
  c1 = y1[:, None] == y1[None, :]
  neg = ~(c1 | c2)
  logits = logits - logits.mean(axis=1, keepdims=True)  # row-centring
  sim = np.exp(logits)
  negsum = (sim * neg).sum(axis=1, keepdims=True)
  terms = c2 * (np.log(sim + negsum) - logits)
  return terms.sum() / max(c2.sum(), 1)


def _inputs(seed=0, n=N, d=D):
  rng = np.random.default_rng(seed)
  # P x K = 4 x 4, shuffled so that a class's rows sit on other devices.
  y1 = rng.permutation(np.repeat(rng.permutation(9)[:4], 4)).astype(np.int32)
  q = rng.normal(size=(n, d)) + np.eye(d)[y1 % d]
  k = q + 0.3 * rng.normal(size=(n, d))
  gate = 1 / (1 + np.exp(-2 * rng.normal(size=(n, d))))
  y2 = y1[rng.permutation(n)]
  y2[0] = 8  # a class absent from the batch: row 0 has no positive
  return [np.asarray(a, np.float32) for a in (q, k, gate)] + [y1, y2]


@functools.partial(jax.jit, static_argnames="t")
def _hydra(q, k, gate, y1, y2, t):
  return losses.hydra(q, k, gate, y1, y2, temperature=t)


@pytest.mark.parametrize("pairs", ["arbitrary", "identical", "one_view"])
def test_matches_the_authors_formula_in_float64(pairs):
  q, k, gate, y1, y2 = _inputs(1)
  if pairs == "identical":
    y2 = y1
  if pairs == "one_view":  # keys = queries (vitookit), self pair included
    k = q
  t = 0.2
  loss, aux = _hydra(q, k, gate, y1, y2, t)
  want = ref_hydra(q, k, gate, y1, y2, t)
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  # diagnostics: gate activation and Bernoulli entropy, positive cosine
  np.testing.assert_allclose(aux["gate_activation"], gate.sum(1).mean(), 1e-5)
  g = gate.astype(np.float64)
  h = -(g * np.log(g) + (1 - g) * np.log(1 - g))
  np.testing.assert_allclose(aux["gate_entropy"], h.mean(), rtol=1e-5)
  cos = _unit(q) @ _unit(k).T
  pos = y2[:, None] == y1[None, :]
  np.testing.assert_allclose(aux["pos_sim"], cos[pos].mean(), rtol=1e-5)
  has = pos.any(1)
  np.testing.assert_allclose(aux["frac_with_pos"], has.mean(), rtol=1e-6)


def test_hand_checked_cases():
  # Row 0 (class 0) is paired with class 1: key 2 is its positive, key 1
  # (its own class) is excluded, key 3 (class 2) is its only negative.
  # Rows 1-3 are paired with class 3, absent: no positive, no term.
  y1 = np.array([0, 0, 1, 2], np.int32)
  y2 = np.array([1, 3, 3, 3], np.int32)
  z = np.array([[1, 1], [-1, 0.3], [1, 0], [0, 1]], np.float32)
  gate = np.ones_like(z)
  # cos(z0, z2) = cos(z0, z3) = 1/sqrt2: l = softplus(0) = log 2, any t.
  loss, _ = _hydra(z, z, gate, y1, y2, 0.5)
  np.testing.assert_allclose(loss, math.log(2), rtol=1e-6)
  # Gate (1, 1/2) on row 0: l02 = <(1, 1/4)/sqrt2, (1, 0)> / t = 1/sqrt2 / t,
  # l03 = 1/(4 sqrt2) / t; with t = 1/2: softplus(-1.5 / sqrt2).
  gate[0] = [1.0, 0.5]
  loss, aux = _hydra(z, z, gate, y1, y2, 0.5)
  np.testing.assert_allclose(
    loss, math.log1p(math.exp(-1.5 / math.sqrt(2))), rtol=1e-6
  )
  assert aux["top1"] == 1.0 and aux["frac_with_pos"] == 0.25
  # Row 0 paired with its own class (SupCon row): its positives are itself
  # (cosine 1) and key 1 (cosine c), each against the negatives keys 2, 3
  # (cosine 1/sqrt2 each): mean of softplus(1/sqrt2 + log 2 - s), t = 1.
  y2_own = np.array([0, 3, 3, 3], np.int32)
  loss, _ = _hydra(z, z, np.ones_like(z), y1, y2_own, 1.0)
  c = (-1 + 0.3) / (math.sqrt(2) * math.sqrt(1.09))
  lse = 1 / math.sqrt(2) + math.log(2)
  sp = lambda x: math.log1p(math.exp(x))
  np.testing.assert_allclose(loss, (sp(lse - 1) + sp(lse - c)) / 2, 1e-6)
  # A row without negatives (one class in the batch): log 1 = 0, and a
  # zero (not NaN) gradient.
  one = np.zeros(2, np.int32)
  f = lambda z: _hydra(z, z, gate[:2], one, one, 0.5)[0]
  assert float(f(z[:2])) == 0.0
  assert np.all(np.asarray(jax.grad(f)(z[:2])) == 0)
  # No positive anywhere: 0, with zero gradient.
  none = np.full(4, 7, np.int32)
  g = jax.grad(lambda z: _hydra(z, z, gate, y1, none, 0.5)[0])(z)
  assert float(_hydra(z, z, gate, y1, none, 0.5)[0]) == 0.0
  assert np.all(np.asarray(g) == 0)


def test_identical_pairs_with_an_open_gate_is_supcon():
  """y2 = y1, g = 1: each same-class key against the other classes' keys,
  i.e. `decoupled_softmax` with same-class positives (P x K: every query
  has K positives, so its per-query mean equals the per-pair mean)."""
  q, k, _, y1, _ = _inputs(2)
  ones = np.ones_like(q)
  got, _ = _hydra(q, k, ones, y1, y1, 0.1)
  same = y1[:, None] == y1[None, :]
  want, _ = contrastive.decoupled_softmax(q, k, same, temperature=0.1)
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_sharded_equals_one_device_value_aux_and_gradients():
  q, k, gate, y1, y2 = _inputs(3)
  mesh = sharding.make_data_mesh()
  assert mesh.shape[sharding.DATA_AXIS] == 8

  def vg(fn):
    f = lambda q, k, g: fn(q, k, g, y1s, y2s)
    return jax.jit(jax.value_and_grad(f, (0, 1, 2), has_aux=True))

  y1s, y2s = y1, y2
  single = functools.partial(losses.hydra, temperature=0.2)
  (want, want_aux), want_g = vg(single)(q, k, gate)
  put = lambda a: jax.device_put(a, sharding.batch_sharding(mesh))
  q, k, gate, y1s, y2s = map(put, (q, k, gate, y1, y2))
  sharded = sharding.shard_loss(losses.hydra, mesh, temperature=0.2)
  (got, got_aux), got_g = vg(sharded)(q, k, gate)
  chex.assert_trees_all_close((got, got_aux), (want, want_aux), rtol=1e-5)
  chex.assert_trees_all_close(got_g, want_g, rtol=1e-5, atol=1e-7)
  assert all(float(np.abs(g).max()) > 1e-3 for g in want_g)


def test_finite_gradients_at_zero_and_bad_inputs():
  q, k, gate, y1, y2 = _inputs(4)
  zero = jnp.zeros_like(q)
  g = jax.grad(lambda z: _hydra(z, z, gate, y1, y2, 0.1)[0])(zero)
  assert np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="gate"):
    losses.hydra(q, k, gate[:, :3], y1, y2)
  with pytest.raises(ValueError, match="pair_labels"):
    losses.hydra(q, k, gate, y1, y2.astype(np.float32))
  with pytest.raises(ValueError, match="temperature"):
    losses.hydra(q, k, gate, y1, y2, temperature=0.0)

"""info_nce, dcl, dclw, decoupled_softmax against float64 NumPy references."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from idlearn.losses import contrastive

RNG = np.random.default_rng(0)
B, D = 6, 5


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_two_view(z1, z2, t, *, decoupled=False, sigma=None):
  """Loops over anchors: -w_i s_ii'/t + log sum over the denominator."""
  u1, u2 = _unit(z1), _unit(z2)
  n = len(u1)
  w = np.ones(n)
  if sigma is not None:
    c = np.sum(u1 * u2, axis=1) / sigma
    w = 2 - n * np.exp(c - logsumexp(c))
  total = 0.0
  for a, o in ((u1, u2), (u2, u1)):
    for i in range(n):
      terms = [a[i] @ a[k] / t for k in range(n) if k != i]
      terms += [a[i] @ o[k] / t for k in range(n) if not (decoupled and k == i)]
      total += logsumexp(terms) - w[i] * (a[i] @ o[i]) / t
  return total / (2 * n)


def ref_decoupled_softmax(q, k, positives, t):
  s = _unit(q) @ _unit(k).T / t
  per_query = []
  for i in range(len(q)):
    pos = np.flatnonzero(positives[i])
    if pos.size == 0:
      continue
    negs = s[i, ~positives[i].astype(bool)]
    losses = [-s[i, j] + logsumexp(np.append(negs, s[i, j])) for j in pos]
    per_query.append(np.mean(losses))
  return np.mean(per_query)


# One compiled value-and-grad per loss, hyper-parameters traced (a traced
# temperature skips the trace-time check), shared by the tests below.
_TWO_VIEW = {
  "info_nce": lambda z1, z2, t, s: contrastive.info_nce(z1, z2, temperature=t),
  "dcl": lambda z1, z2, t, s: contrastive.dcl(z1, z2, temperature=t),
  "dclw": lambda z1, z2, t, s: contrastive.dclw(z1, z2, temperature=t, sigma=s),
}


@functools.cache
def _vg(name):
  if name == "decoupled_softmax":
    f = lambda q, k, pos, t: contrastive.decoupled_softmax(
      q, k, pos, temperature=t
    )
  else:
    f = _TWO_VIEW[name]
  return jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))


@pytest.mark.parametrize("t", [0.1, 0.5])
@pytest.mark.parametrize("name", sorted(_TWO_VIEW))
def test_two_view_losses_match_numpy(name, t):
  z1, z2 = RNG.normal(size=(2, B, D)).astype(np.float32)
  (loss, aux), _ = _vg(name)(z1, z2, t, 0.5)
  sigma = 0.5 if name == "dclw" else None
  want = ref_two_view(z1, z2, t, decoupled=name != "info_nce", sigma=sigma)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  u1, u2 = _unit(z1), _unit(z2)
  np.testing.assert_allclose(aux["pos_sim"], np.mean(np.sum(u1 * u2, 1)), 1e-5)


def test_dclw_sigma_changes_only_weights():
  """Weights average to 1: with equal positive cosines w_i = 1, DCLW = DCL."""
  z1 = RNG.normal(size=(B, D)).astype(np.float32)
  (loss_w, aux), _ = _vg("dclw")(z1, z1, 0.1, 0.5)
  (loss, _), _ = _vg("dcl")(z1, z1, 0.1, 0.5)
  np.testing.assert_allclose(loss_w, loss, rtol=1e-6)
  np.testing.assert_allclose(aux["weight_max"], 0.0, atol=1e-5)


def test_info_nce_top1_and_perfect_views():
  z1 = RNG.normal(size=(B, D)).astype(np.float32)
  (good, aux), _ = _vg("info_nce")(z1, z1, 0.1, 0.5)
  (bad, aux_bad), _ = _vg("info_nce")(z1, np.roll(z1, 1, 0), 0.1, 0.5)
  assert good < bad
  assert aux["top1"] == 1.0 and aux_bad["top1"] < 1.0


@pytest.mark.parametrize("t", [0.05, 0.2])
def test_decoupled_softmax_matches_numpy(t):
  q = RNG.normal(size=(B, D)).astype(np.float32)
  k = RNG.normal(size=(2 * B, D)).astype(np.float32)
  positives = RNG.random((B, 2 * B)) < 0.3
  positives[0] = False  # a query without positive is left out
  positives[1, :] = True  # ... and one with no negative at all
  positives[1, 0] = False
  (loss, aux), _ = _vg("decoupled_softmax")(q, k, positives, t)
  np.testing.assert_allclose(
    loss, ref_decoupled_softmax(q, k, positives, t), rtol=1e-5
  )
  np.testing.assert_allclose(aux["frac_with_pos"], (B - 1) / B, rtol=1e-6)
  s = _unit(q) @ _unit(k).T
  np.testing.assert_allclose(aux["pos_sim"], s[positives].mean(), rtol=1e-5)


def test_decoupled_softmax_one_positive_is_info_nce_row():
  """One positive per query: l_i = -s_ip + log(e^s_ip + sum_neg e^s_in)."""
  q = RNG.normal(size=(B, D)).astype(np.float32)
  k = RNG.normal(size=(2 * B, D)).astype(np.float32)
  positives = np.eye(B, 2 * B, dtype=bool)
  (loss, aux), _ = _vg("decoupled_softmax")(q, k, positives, 0.05)
  s = _unit(q) @ _unit(k).T / 0.05
  want = np.mean(logsumexp(s, axis=1) - np.diag(s))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(aux["top1"], np.mean(s.argmax(1) == np.arange(B)))


# --- stability, dtypes, errors ------------------------------------------------


def _call(name, z1, z2):
  """Temperature 0.05; decoupled_softmax: keys = [z2; z1], positive k = i."""
  if name == "decoupled_softmax":
    b = len(z1)
    k = jnp.concatenate([z2, z1])
    return _vg(name)(z1, k, np.eye(b, 2 * b, dtype=bool), 0.05)
  return _vg(name)(z1, z2, 0.05, 0.5)


@pytest.mark.parametrize("case", ["identical", "zeros", "batch_of_2"])
@pytest.mark.parametrize("name", [*sorted(_TWO_VIEW), "decoupled_softmax"])
def test_finite_value_and_grad(name, case):
  z = RNG.normal(size=(B, D)).astype(np.float32)
  z1, z2 = {
    "identical": (np.tile(z[:1], (B, 1)),) * 2,
    "zeros": (np.zeros_like(z), np.zeros_like(z)),
    "batch_of_2": (z[:2], z[2:4]),
  }[case]
  (loss, aux), grads = _call(name, z1, z2)
  chex.assert_tree_all_finite((loss, aux, grads))


@pytest.mark.parametrize("name", [*sorted(_TWO_VIEW), "decoupled_softmax"])
def test_bfloat16_inputs(name):
  z1, z2 = RNG.normal(size=(2, B, D)).astype(np.float32)
  b1, b2 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
  (loss, _), grads = _call(name, b1, b2)
  assert loss.dtype == jnp.float32
  assert grads[0].dtype == jnp.bfloat16
  # float32 inside: equal to the float32 loss of the same (rounded) values.
  (want, _), _ = _call(name, b1.astype(jnp.float32), b2.astype(jnp.float32))
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_bad_inputs_raise():
  z = np.zeros((4, D), np.float32)
  with pytest.raises(ValueError, match=r"z1 and z2.*\(4, 5\).*\(3, 5\)"):
    contrastive.info_nce(z, z[:3])
  with pytest.raises(ValueError, match=r"z1 must be \[b, d\].*\(4,\)"):
    contrastive.dcl(z[:, 0], z[:, 0])
  for t in (0.0, -0.1):
    with pytest.raises(ValueError, match="temperature must be > 0"):
      contrastive.info_nce(z, z, temperature=t)
  with pytest.raises(ValueError, match="sigma must be > 0"):
    contrastive.dclw(z, z, sigma=0.0)
  with pytest.raises(ValueError, match="at least 2"):
    contrastive.dcl(z[:1], z[:1])
  with pytest.raises(ValueError, match=r"positives must be \[b, M\].*\(4, 4\)"):
    contrastive.decoupled_softmax(z, z, np.ones((4, 3), bool))
  with pytest.raises(ValueError, match=r"q and k.*\(4, 5\).*\(4, 2\)"):
    contrastive.decoupled_softmax(z, z[:, :2], np.ones((4, 4), bool))

"""arcface / cosface against float64 NumPy references."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from idlearn.losses import margin

RNG = np.random.default_rng(2)
B, D, C = 6, 5, 4


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_margin_softmax(emb, w, ids, scale, m, kind):
  cos = _unit(emb) @ _unit(w).T
  logits = scale * cos
  rows = np.arange(len(ids))
  theta = np.arccos(cos[rows, ids])
  logits[rows, ids] = scale * (
    np.cos(theta + m) if kind == "arcface" else cos[rows, ids] - m
  )
  return np.mean(logsumexp(logits, axis=1) - logits[rows, ids])


@functools.cache
def _vg(kind):
  """One compiled value-and-grad per loss; scale and margin are traced."""
  f = lambda emb, w, ids, scale, m: getattr(margin, kind)(
    emb, w, ids, scale=scale, margin=m
  )
  return jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))


@pytest.mark.parametrize("scale,m", [(64.0, 0.5), (10.0, 0.2)])
@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_matches_numpy(kind, scale, m):
  emb = RNG.normal(size=(B, D)).astype(np.float32)
  w = RNG.normal(size=(C, D)).astype(np.float32)
  ids = RNG.integers(0, C, B).astype(np.int32)
  (loss, aux), _ = _vg(kind)(emb, w, ids, scale, m)
  want = ref_margin_softmax(emb, w, ids, scale, m, kind)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  cos = _unit(emb) @ _unit(w).T
  np.testing.assert_allclose(aux["top1"], np.mean(cos.argmax(1) == ids))


def test_zero_margin_is_normalised_softmax():
  emb = RNG.normal(size=(B, D)).astype(np.float32)
  w = RNG.normal(size=(C, D)).astype(np.float32)
  ids = RNG.integers(0, C, B).astype(np.int32)
  (arc, _), _ = _vg("arcface")(emb, w, ids, 10.0, 0.0)
  (cos, _), _ = _vg("cosface")(emb, w, ids, 10.0, 0.0)
  np.testing.assert_allclose(arc, cos, rtol=1e-5)
  (arc_m, _), _ = _vg("arcface")(emb, w, ids, 10.0, 0.2)
  assert arc_m > arc  # the margin makes the target harder


@pytest.mark.parametrize("case", ["identical", "zeros", "batch_of_2"])
@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_finite_value_and_grad(kind, case):
  w = RNG.normal(size=(C, D)).astype(np.float32)
  emb, ids = {
    # embedding equal to its class weight: cos = 1 exactly (sin'(0) = inf)
    "identical": (np.tile(w[:1], (B, 1)), np.zeros(B, np.int32)),
    "zeros": (np.zeros((B, D), np.float32), np.zeros(B, np.int32)),
    "batch_of_2": (-w[:2], np.array([0, 1], np.int32)),  # cos = -1
  }[case]
  (loss, aux), grads = _vg(kind)(emb, w, ids, 64.0, 0.5)
  chex.assert_tree_all_finite((loss, aux, grads))


def test_bfloat16_inputs():
  emb = jnp.asarray(RNG.normal(size=(B, D)), jnp.bfloat16)
  w = RNG.normal(size=(C, D)).astype(np.float32)
  ids = np.array([0, 1, 2, 3, 0, 1], np.int32)
  (loss, _), grads = _vg("arcface")(emb, w, ids, 64.0, 0.5)
  assert loss.dtype == jnp.float32 and grads[0].dtype == jnp.bfloat16
  (want, _), _ = _vg("arcface")(emb.astype(jnp.float32), w, ids, 64.0, 0.5)
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_bad_inputs_raise():
  emb, w = np.zeros((4, D), np.float32), np.zeros((C, D), np.float32)
  ids = np.zeros(4, np.int32)
  with pytest.raises(
    ValueError, match=r"class_weights must be \[c, d\].*\(4, 3\)"
  ):
    margin.arcface(emb, w[:, :3], ids)
  with pytest.raises(ValueError, match=r"ids must be \[b\].*\(2,\)"):
    margin.cosface(emb, w, ids[:2])
  with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\)"):
    margin.cosface(emb, w, ids + 4)
  with pytest.raises(ValueError, match="scale must be > 0"):
    margin.arcface(emb, w, ids, scale=0.0)

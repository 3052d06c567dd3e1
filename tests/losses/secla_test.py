"""SECLA symmetric face-name contrastive loss vs a loop reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import sharding
from idlearn.losses.secla import secla

RTOL = 1e-5
_secla = jax.jit(secla)  # eager dispatch is slow on the shared CPU


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_secla(faces, fmask, names, nmask, t=0.07):
  f, n = _unit(faces), _unit(names)
  b = len(f)

  def direction(q, qm, k, km):
    losses = []
    for i in range(b):
      for a in np.flatnonzero(qm[i]):
        scores = np.array(
          [
            max(q[i, a] @ k[j, c] for c in np.flatnonzero(km[j])) / t
            for j in range(b)
          ]
        )
        lse = np.log(np.sum(np.exp(scores - scores.max()))) + scores.max()
        losses.append(lse - scores[i])
    return np.mean(losses)

  return 0.5 * (direction(f, fmask, n, nmask) + direction(n, nmask, f, fmask))


def _inputs(b=8, m=3, k=4, d=6, seed=0):
  rng = np.random.default_rng(seed)
  people = rng.normal(size=(200, d))
  faces = rng.normal(size=(b, m, d))  # padding: garbage the mask must hide
  names = rng.normal(size=(b, k, d))
  fmask = np.zeros((b, m), bool)
  nmask = np.zeros((b, k), bool)
  for i in range(b):
    nf = rng.integers(1, m + 1)
    who = rng.choice(200, size=nf, replace=False)
    faces[i, :nf] = people[who] + 0.3 * rng.normal(size=(nf, d))
    nn = min(k, nf + rng.integers(0, 2))  # captions may name extra people
    names[i, :nf] = people[who] + 0.3 * rng.normal(size=(nf, d))
    fmask[i, :nf] = True
    nmask[i, :nn] = True
  return faces, fmask, names, nmask


def test_matches_loop_reference():
  faces, fmask, names, nmask = _inputs()
  want = _np_secla(faces, fmask, names, nmask)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  got, aux = jax.jit(secla)(f32(faces), fmask, f32(names), nmask)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  assert 0.0 <= float(aux["face_top1"]) <= 1.0


def test_both_directions_contribute():
  faces, fmask, names, nmask = _inputs(seed=1)
  f, n = _unit(faces), _unit(names)
  # Hand check of the symmetry: swapping the roles of faces and names
  # leaves the loss unchanged.
  a, _ = _secla(jnp.asarray(f), fmask, jnp.asarray(n), nmask)
  b, _ = _secla(jnp.asarray(n), nmask, jnp.asarray(f), fmask)
  np.testing.assert_allclose(a, b, rtol=RTOL)


def test_aligned_pairs_score_lower_than_shuffled_captions():
  faces, fmask, names, nmask = _inputs(d=16, seed=2)
  good, aux = _secla(
    jnp.asarray(faces), fmask, jnp.asarray(names), nmask, temperature=0.1
  )
  perm = np.roll(np.arange(8), 1)
  bad, _ = _secla(
    jnp.asarray(faces),
    fmask,
    jnp.asarray(names[perm]),
    nmask[perm],
    temperature=0.1,
  )
  assert float(good) < float(bad)
  assert float(aux["face_top1"]) > 0.8


def test_sharded_equals_global():
  faces, fmask, names, nmask = _inputs()
  args = [
    jnp.asarray(faces, jnp.float32),
    jnp.asarray(fmask),
    jnp.asarray(names, jnp.float32),
    jnp.asarray(nmask),
  ]
  f = sharding.shard_loss(secla, sharding.make_data_mesh())
  vg = lambda fn: jax.jit(
    jax.value_and_grad(
      lambda a, c: fn(a, args[1], c, args[3]), (0, 1), has_aux=True
    )
  )(args[0], args[2])
  (got, g_got), (want, g_want) = vg(f), vg(secla)
  chex.assert_trees_all_close(got, want, rtol=RTOL)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-7)


def test_finite_at_zero_and_bad_shapes():
  z = jnp.zeros((4, 2, 3))
  mask = jnp.ones((4, 2), bool)
  loss, g = jax.jit(jax.value_and_grad(lambda a: secla(a, mask, a, mask)[0]))(z)
  assert np.isfinite(float(loss)) and np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="name_mask"):
    secla(z, mask, z, jnp.ones((4, 3), bool))
  with pytest.raises(ValueError, match="faces and names"):
    secla(z, mask, jnp.zeros((4, 2, 5)), mask)

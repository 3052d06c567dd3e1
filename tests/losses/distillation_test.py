"""DINO / CION identity-guided self-distillation vs loop references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import sharding
from idlearn.losses import distillation

RTOL = 1e-5


def _np_softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def _np_cion(s, t, center, kk, ts=0.1, tt=0.04):
  """Literal transcription: strided instance chunks, loops over crops."""
  q = _np_softmax((t - center) / tt)  # [b, v_t, k]
  logp = np.log(_np_softmax(s / ts))  # [b, v_s, k]
  total, n_terms = 0.0, 0
  for a in range(t.shape[1]):
    for c in range(s.shape[1]):
      if a == c:
        continue
      qa, lc = q[:, a], logp[:, c]
      term = np.mean(np.sum(-qa * lc, -1))
      for i in range(kk):
        for j in range(kk):
          if i != j:
            term += np.mean(np.sum(-qa[i::kk] * lc[j::kk], -1))
      total += term / (kk * (kk - 1) + 1)
      n_terms += 1
  return total / n_terms


def _inputs(b=16, v_s=4, v_t=2, k=10, seed=0):
  rng = np.random.default_rng(seed)
  s = rng.normal(size=(b, v_s, k))
  t = rng.normal(size=(b, v_t, k))
  center = rng.normal(size=(k,)) * 0.1
  return s, t, center


@pytest.mark.parametrize("kk", [1, 2, 4])
def test_cion_matches_loop_reference(kk):
  s, t, center = _inputs()
  want = _np_cion(s, t, center, kk)
  got, aux = jax.jit(
    lambda a, b, c: distillation.cion(a, b, center=c, num_instances=kk)
  )(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), center)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  if kk == 1:
    np.testing.assert_allclose(aux["dino"], want, rtol=RTOL)


def test_dino_is_cion_with_one_instance_and_matches_reference():
  s, t, center = _inputs(seed=3)
  got, _ = distillation.dino(jnp.asarray(s), jnp.asarray(t), center=center)
  np.testing.assert_allclose(got, _np_cion(s, t, center, 1), rtol=RTOL)


def test_teacher_gets_no_gradient_and_student_does():
  s, t, center = _inputs()
  gs, gt = jax.jit(
    jax.grad(
      lambda a, b: distillation.cion(a, b, center=center, num_instances=2)[0],
      argnums=(0, 1),
    )
  )(jnp.asarray(s), jnp.asarray(t))
  assert np.abs(np.asarray(gt)).max() == 0.0
  assert np.abs(np.asarray(gs)).max() > 0.0


def test_cion_sharded_equals_global():
  s, t, center = _inputs()
  args = [jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32)]
  mesh = sharding.make_data_mesh()
  kw = dict(center=jnp.asarray(center, jnp.float32), num_instances=2)
  f = sharding.shard_loss(distillation.cion, mesh, **kw)
  single = lambda a, b: distillation.cion(a, b, **kw)
  vg = lambda fn: jax.jit(jax.value_and_grad(fn, has_aux=True))(*args)
  got, g_got = vg(f)
  want, g_want = vg(single)
  chex.assert_trees_all_close(got, want, rtol=RTOL)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-8)


def test_update_center_is_ema_of_global_mean_sharded_too():
  _, t, center = _inputs()
  want = 0.9 * center + 0.1 * t.mean(axis=(0, 1))
  got = distillation.update_center(jnp.asarray(center), jnp.asarray(t))
  np.testing.assert_allclose(got, want, rtol=RTOL)
  mesh = sharding.make_data_mesh()
  c = jnp.asarray(center, jnp.float32)
  f = jax.shard_map(
    lambda x: distillation.update_center(c, x, axis_name=sharding.DATA_AXIS),
    mesh=mesh,
    in_specs=jax.P(sharding.DATA_AXIS),
    out_specs=jax.P(),
  )
  np.testing.assert_allclose(
    jax.jit(f)(jnp.asarray(t, jnp.float32)), want, rtol=RTOL
  )


def test_finite_when_outputs_identical_and_bad_shapes():
  z = jnp.zeros((8, 3, 5))
  g = jax.jit(
    jax.grad(
      lambda s: distillation.cion(
        s, s[:, :2], center=jnp.zeros(5), num_instances=4
      )[0]
    )
  )(z)
  assert np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="num_instances"):
    distillation.cion(z, z[:, :2], center=jnp.zeros(5), num_instances=3)
  with pytest.raises(ValueError, match="teacher_logits"):
    distillation.dino(z, jnp.zeros((8, 2, 4)), center=jnp.zeros(5))
  with pytest.raises(ValueError, match="center"):
    distillation.dino(z, z[:, :2], center=jnp.zeros(4))


def test_cion_num_instances_schedule():
  got = [distillation.cion_num_instances(e) for e in (0, 39, 40, 79, 99, 500)]
  assert got == [2, 2, 4, 6, 8, 8]

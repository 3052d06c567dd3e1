"""Optimizers and schedules against hand-written NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn.methods import base
from idlearn.training import optim, step


def _params():
  rng = np.random.default_rng(0)
  return {
    "dense": {
      "kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
      "bias": jnp.asarray(rng.normal(size=(2,)), jnp.float32),
    },
    "bn": {"scale": jnp.asarray(rng.normal(size=(2,)), jnp.float32)},
  }


def _grads():
  rng = np.random.default_rng(1)
  return jax.tree.map(
    lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _params()
  )


def _step(cfg, params, grads, total=10):
  tx, _ = optim.make_optimizer(cfg, total)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  return jax.tree.map(np.asarray, updates)


def test_warmup_cosine_schedule_matches_formula():
  _, sched = optim.make_optimizer(
    {"lr": 0.4, "warmup_steps": 4, "end_lr_factor": 0.1}, 20
  )
  for s in range(21):
    if s < 4:
      want = 0.4 * s / 4
    else:
      frac = (s - 4) / 16
      want = 0.04 + (0.4 - 0.04) * (1 + np.cos(np.pi * frac)) / 2
    np.testing.assert_allclose(float(sched(s)), want, rtol=1e-6, atol=1e-8)


def test_decay_mask_excludes_biases_and_norm_params():
  mask = optim.decay_mask(_params())
  assert mask == {
    "dense": {"kernel": True, "bias": False},
    "bn": {"scale": False},
  }


def test_lars_first_update_matches_reference():
  """LARS (You et al.): kernels get decay + trust ratio, 1-D params neither."""
  p, g = _params(), _grads()
  lr, wd, tc = 0.5, 1e-2, 1e-3
  cfg = dict(
    name="lars",
    lr=lr,
    weight_decay=wd,
    trust_coefficient=tc,
    momentum=0.9,
    schedule="constant",
  )
  got = _step(cfg, p, g)
  w, gw = (
    np.asarray(p["dense"]["kernel"], np.float64),
    np.asarray(g["dense"]["kernel"], np.float64),
  )
  d = gw + wd * w
  trust = tc * np.linalg.norm(w) / np.linalg.norm(d)
  np.testing.assert_allclose(got["dense"]["kernel"], -lr * trust * d, rtol=1e-5)
  for path in (("dense", "bias"), ("bn", "scale")):
    want = -lr * np.asarray(g[path[0]][path[1]])
    np.testing.assert_allclose(got[path[0]][path[1]], want, rtol=1e-6)


def test_adamw_decays_only_kernels():
  p = _params()
  zeros = jax.tree.map(jnp.zeros_like, p)  # Adam's own step is then 0
  got = _step(
    dict(name="adamw", lr=0.1, weight_decay=0.5, schedule="constant"), p, zeros
  )
  np.testing.assert_allclose(
    got["dense"]["kernel"],
    -0.1 * 0.5 * np.asarray(p["dense"]["kernel"]),
    rtol=1e-6,
  )
  np.testing.assert_array_equal(got["dense"]["bias"], 0.0)
  np.testing.assert_array_equal(got["bn"]["scale"], 0.0)


def test_sgd_weight_decay_and_clipping():
  p, g = _params(), _grads()
  norm = np.sqrt(sum(float(jnp.sum(x * x)) for x in jax.tree.leaves(g)))
  cfg = dict(
    name="sgd",
    lr=0.1,
    weight_decay=0.01,
    momentum=0.9,
    schedule="constant",
    clip_norm=0.5,
  )
  got = _step(cfg, p, g)
  clipped = jax.tree.map(lambda x: np.asarray(x) * 0.5 / norm, g)
  np.testing.assert_allclose(
    got["dense"]["kernel"],
    -0.1
    * (clipped["dense"]["kernel"] + 0.01 * np.asarray(p["dense"]["kernel"])),
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    got["dense"]["bias"], -0.1 * clipped["dense"]["bias"], rtol=1e-5
  )


def test_ema_update_and_cosine_ramp():
  t, o = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, -2.0])}
  np.testing.assert_allclose(
    step.ema_update(t, o, 0.9)["w"], [0.9 + 0.3, 1.8 - 0.2], rtol=1e-6
  )
  decay = base.ema_schedule(0.99, 1.0, 100)
  np.testing.assert_allclose(
    [float(decay(s)) for s in (0, 50, 100)],
    [0.99, 0.995, 1.0],
    rtol=1e-6,
  )
  assert float(base.ema_schedule(0.9, 0.0, 100)(50)) == pytest.approx(0.9)
  assert base.ema_schedule(0.0, 1.0, 100) is None


def test_unknown_field_lists_valid_fields():
  with pytest.raises(ValueError, match="learning_rate.*valid fields.*lr"):
    optim.make_optimizer({"learning_rate": 0.1}, 10)
  with pytest.raises(ValueError, match="is not one of: adamw, lars, sgd"):
    optim.make_optimizer({"name": "adam"}, 10)

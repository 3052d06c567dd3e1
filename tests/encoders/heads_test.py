"""Heads against NumPy float64 forward passes written from their formulas."""

import jax
import numpy as np
import pytest
from scipy.special import erf

from idlearn.encoders import heads

KEY = jax.random.key(0, impl="rbg")
EPS = 1e-5


def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _bn_eval(x, p, s, affine=True):
  y = (x - s["mean"]) / np.sqrt(s["var"] + EPS)
  return y * p.get("scale", 1.0) + p.get("bias", 0.0) if affine else y


def _with_stats(variables, rng):
  """Random positive running variances and means, so eval BN is exercised."""
  stats = jax.tree_util.tree_map_with_path(
    lambda path, a: (
      rng.uniform(0.5, 2.0, a.shape)
      if path[-1].key == "var"
      else rng.normal(size=a.shape)
    ).astype(np.float32),
    variables["batch_stats"],
  )
  return {**variables, "batch_stats": stats}


@pytest.mark.parametrize("last_bn", [False, True])
def test_projection_mlp_eval(last_bn):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 6)).astype(np.float32)
  head = heads.ProjectionMLP(
    hidden_dim=5, out_dim=3, num_layers=3, last_bn=last_bn
  )
  v = _with_stats(jax.jit(head.init)(KEY, x), rng)
  got = jax.jit(head.apply)(v, x)
  p, s = _np(v["params"]), _np(v["batch_stats"])
  h = x.astype(np.float64)
  for i in range(2):
    h = np.maximum(
      _bn_eval(h @ p[f"dense{i}"]["kernel"], p[f"bn{i}"], s[f"bn{i}"]), 0
    )
  h = h @ p["dense2"]["kernel"]
  if last_bn:
    assert "bn2" not in p  # no affine params
    h = _bn_eval(h, {}, s["bn2"])
  else:
    h = h + p["dense2"]["bias"]
  assert got.shape == (4, 3)
  np.testing.assert_allclose(got, h, rtol=1e-5, atol=1e-5)


def test_predictor_eval():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(4, 6)).astype(np.float32)
  head = heads.Predictor(hidden_dim=5, out_dim=6)
  v = _with_stats(jax.jit(head.init)(KEY, x), rng)
  p, s = _np(v["params"]), _np(v["batch_stats"])
  h = np.maximum(_bn_eval(x @ p["dense0"]["kernel"], p["bn0"], s["bn0"]), 0)
  want = h @ p["dense1"]["kernel"] + p["dense1"]["bias"]
  np.testing.assert_allclose(
    jax.jit(head.apply)(v, x), want, rtol=1e-5, atol=1e-5
  )


def test_bnneck_has_no_shift_and_standardises_in_train_mode():
  rng = np.random.default_rng(2)
  x = (rng.normal(size=(16, 5)) * 3 + 2).astype(np.float32)
  neck = heads.BNNeck()
  v = jax.jit(neck.init)(KEY, x)
  assert set(v["params"]["bn"]) == {"scale"}
  y, upd = jax.jit(
    lambda v, x: neck.apply(v, x, train=True, mutable=["batch_stats"])
  )(v, x)
  want = (x - x.mean(0)) / np.sqrt(x.var(0) + EPS)
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
  # PyTorch's momentum 0.1: running mean moves 10% towards the batch mean.
  np.testing.assert_allclose(
    upd["batch_stats"]["bn"]["mean"], 0.1 * x.mean(0), rtol=1e-5
  )


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_dino_head(norm_last_layer):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(4, 6)).astype(np.float32)
  head = heads.DINOHead(
    out_dim=7, hidden_dim=8, bottleneck_dim=5, norm_last_layer=norm_last_layer
  )
  v = jax.jit(head.init)(KEY, x)
  if not norm_last_layer:
    g = rng.uniform(0.5, 2.0, 7).astype(np.float32)
    v = {"params": {**v["params"], "last_layer_g": g}}
  p = _np(v["params"])
  h = x.astype(np.float64)
  for i in range(2):
    h = h @ p[f"mlp{i}"]["kernel"] + p[f"mlp{i}"]["bias"]
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))  # exact GELU
  h = h @ p["mlp2"]["kernel"] + p["mlp2"]["bias"]
  h = h / np.linalg.norm(h, axis=1, keepdims=True)
  w = p["last_layer_v"] / np.linalg.norm(p["last_layer_v"], axis=0)
  if not norm_last_layer:
    w = w * p["last_layer_g"]
  np.testing.assert_allclose(
    jax.jit(head.apply)(v, x), h @ w, rtol=1e-5, atol=1e-5
  )

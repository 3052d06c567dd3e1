"""Registry contract: names build, shapes, dtypes, batch_stats, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import encoders

# rbg keys: a threefry init compiles ~4x slower on CPU.
KEY = jax.random.key(1, impl="rbg")
TINY = ["resnet_tiny", "resnet_tiny_bottleneck"]


@pytest.mark.parametrize("name", TINY)
def test_contract_train_and_eval(name):
  model = encoders.get_encoder(name)
  images = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype("f4")
  variables = jax.jit(model.init)(KEY, images)
  assert set(variables) == {"params", "batch_stats"}
  (emb, aux), upd = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  )(variables, images)
  assert emb.shape == (2, model.feature_dim) and emb.dtype == jnp.float32
  np.testing.assert_array_equal(aux["pooled"], emb)
  # Train mode moved the running statistics away from their init.
  changed = jax.tree.map(
    lambda a, b: float(jnp.abs(a - b).max()),
    upd["batch_stats"],
    variables["batch_stats"],
  )
  assert max(jax.tree.leaves(changed)) > 0
  emb_eval, _ = jax.jit(model.apply)(variables, images)
  assert emb_eval.shape == emb.shape and bool(jnp.isfinite(emb_eval).all())


def test_bfloat16_compute_keeps_float32_params():
  model = encoders.get_encoder("resnet_tiny", dtype=jnp.bfloat16)
  images = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype("f4")
  variables = jax.jit(model.init)(KEY, images)
  dtypes = {a.dtype for a in jax.tree.leaves(variables)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  emb, aux = jax.jit(model.apply)(variables, images)
  assert emb.dtype == jnp.float32 and aux["stage1"].dtype == jnp.bfloat16
  ref, _ = encoders.get_encoder("resnet_tiny").apply(
    variables, images, train=False
  )
  np.testing.assert_allclose(emb, ref, rtol=0.1, atol=0.1)


def test_unknown_name_and_kwarg_raise():
  with pytest.raises(ValueError, match="unknown encoder name 'resnet9'"):
    encoders.get_encoder("resnet9")
  with pytest.raises(ValueError, match="last_strid"):
    encoders.get_encoder("resnet18", last_strid=1)

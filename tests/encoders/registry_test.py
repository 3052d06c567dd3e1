"""Registry contract: names build, shapes, dtypes, batch_stats, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import encoders

# rbg keys: a threefry init compiles ~4x slower on CPU.
KEY = jax.random.key(1, impl="rbg")
TINY = [
  "resnet_tiny",
  "resnet_tiny_bottleneck",
  "osnet_tiny",
  "osnet_ain_tiny",
  "vit_tiny",
]


@pytest.mark.parametrize("name", TINY)
def test_contract_train_and_eval(name):
  model = encoders.get_encoder(name)
  images = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype("f4")
  variables = jax.jit(model.init)(KEY, images)
  has_stats = not name.startswith("vit")
  assert set(variables) == (
    {"params", "batch_stats"} if has_stats else {"params"}
  )
  (emb, aux), upd = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  )(variables, images)
  assert emb.shape == (2, model.feature_dim) and emb.dtype == jnp.float32
  if name.startswith("osnet"):  # emb is the fc layer on the pooled map
    assert aux["pooled"].shape == (2, aux["conv5"].shape[-1])
  else:
    np.testing.assert_array_equal(aux["pooled"], emb)
  if not has_stats:
    return
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


@pytest.mark.parametrize("name", encoders.names())
def test_every_name_builds_with_its_feature_dim(name):
  model = encoders.get_encoder(name)
  hw = getattr(model, "img_size", (64, 32))
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  v = jax.eval_shape(model.init, KEY, x)
  (emb, _), _ = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), v, x
  )
  assert emb.shape == (2, model.feature_dim) == (2, encoders.feature_dim(name))
  assert emb.dtype == jnp.float32


@pytest.mark.parametrize("last_stride,want", [(2, (2, 1)), (1, (4, 2))])
def test_last_stride_and_gem(last_stride, want):
  model = encoders.get_encoder(
    "resnet18", last_stride=last_stride, pooling="gem"
  )
  x = jax.ShapeDtypeStruct((2, 64, 32, 3), jnp.float32)
  v = jax.eval_shape(model.init, KEY, x)
  assert v["params"]["gem"]["p"].shape == (1,)
  _, aux = jax.eval_shape(lambda v, x: model.apply(v, x), v, x)
  assert aux["stage4"].shape == (2, *want, 512)


def test_gem_pooling_formula():
  x = np.abs(np.random.default_rng(0).normal(size=(2, 3, 4, 5))) + 0.1
  got = encoders.GeM(p=3.0).apply({"params": {"p": np.array([3.0])}}, x)
  want = np.mean(x.astype(np.float64) ** 3, axis=(1, 2)) ** (1 / 3)
  np.testing.assert_allclose(got, want, rtol=1e-5)

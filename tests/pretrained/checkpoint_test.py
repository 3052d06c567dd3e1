"""pretrained.save / load: round trip gives the same model and outputs."""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import encoders, pretrained


@pytest.mark.parametrize(
  "config",
  [
    {"name": "resnet_tiny", "last_stride": 1, "pooling": "gem"},
    {
      "name": "vit_tiny",
      "img_size": (32, 16),
      "pooling": "mean",
      "dtype": jnp.bfloat16,
    },
  ],
)
def test_round_trip_same_outputs(config):
  kw = {k: v for k, v in config.items() if k != "name"}
  model = encoders.get_encoder(config["name"], **kw)
  images = np.random.default_rng(0).normal(size=(2, 32, 16, 3))
  images = images.astype(np.float32)
  # rbg keys: threefry init compiles ~4x slower on CPU.
  variables = jax.jit(model.init)(jax.random.key(1, impl="rbg"), images)
  # Non-init values everywhere, so a restore of fresh init values would fail.
  variables = jax.tree.map(lambda a: a + 0.01 * np.cos(a.size), variables)
  apply = jax.jit(lambda m, v, x: m.apply(v, x), static_argnums=0)
  want, _ = apply(model, variables, images)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "enc")
    pretrained.save(path, config, variables)
    model2, variables2 = pretrained.load(path)
  assert model2 == model
  jax.tree.map(np.testing.assert_array_equal, variables2, variables)
  got, _ = apply(model2, variables2, images)
  np.testing.assert_array_equal(got, want)


def test_save_rejects_mismatched_variables_and_bad_config():
  model = encoders.get_encoder("resnet_tiny")
  images = jnp.zeros((1, 32, 16, 3))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  variables = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), variables)
  with tempfile.TemporaryDirectory() as tmp:
    with pytest.raises(ValueError, match="do not fit"):
      pretrained.save(tmp + "/a", {"name": "resnet_tiny_bottleneck"}, variables)
    with pytest.raises(ValueError, match="'name'"):
      pretrained.save(tmp + "/b", {"arch": "resnet_tiny"}, variables)
    with pytest.raises(ValueError, match="not an idlearn encoder checkpoint"):
      pretrained.load(tmp)
    assert not os.path.exists(tmp + "/a")

"""Encoder folders: a round trip gives the same encoder, neck, outputs and
preprocessing."""

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
  want, _ = jax.jit(model.apply)(variables, images)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "enc")
    pretrained.save(path, config, variables)  # the encoder's own variables
    model2, variables2 = pretrained.load(path)
    spec = pretrained.read_spec(path)
  assert isinstance(model2, encoders.Backbone) and model2.neck == "none"
  assert model2.encoder.clone(dtype=model.dtype) == model
  jax.tree.map(
    np.testing.assert_array_equal,
    variables2,
    {k: {"encoder": v} for k, v in variables.items()},
  )
  got = jax.jit(model2.apply)(variables2, images)
  np.testing.assert_array_equal(got["emb"], want)
  assert spec["preprocessing"]["image_size"] == (256, 128)  # the default


def test_backbone_with_neck_keeps_neck_preprocessing_and_info():
  bb = encoders.Backbone(
    encoder=encoders.get_encoder("resnet_tiny"), neck="embedding", neck_dim=8
  )
  images = np.random.default_rng(0).normal(size=(2, 32, 16, 3))
  variables = jax.jit(bb.init)(jax.random.key(1, impl="rbg"), images)
  want = jax.jit(bb.apply)(variables, images)
  prep = {"image_size": (32, 16), "flip_test": True}
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "enc")
    pretrained.save(
      path, {"name": "resnet_tiny"}, variables, neck="embedding",
      neck_dim=8, preprocessing=prep, info={"threshold": 0.25},
    )  # fmt: skip
    model2, variables2 = pretrained.load(path)
    spec = pretrained.read_spec(path)
  got = jax.jit(model2.apply)(variables2, images)
  np.testing.assert_array_equal(got["eval"], want["eval"])
  assert got["eval"].shape == (2, 8)
  assert spec["preprocessing"]["image_size"] == (32, 16)
  assert spec["preprocessing"]["flip_test"] is True
  assert spec["info"] == {"threshold": 0.25}


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
    with pytest.raises(ValueError, match="not an idlearn encoder folder"):
      pretrained.load(tmp)
    assert not os.path.exists(tmp + "/a")

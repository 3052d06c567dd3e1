"""IdModel composition: outputs, heads, compute dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import encoders
from idlearn.encoders import heads
from idlearn.training import model as model_lib


def _encoder():
  return encoders.get_encoder("resnet_tiny")


def test_bnneck_head_outputs_and_classifier():
  m = model_lib.make_model(
    {"encoder": "resnet_tiny", "head": "bnneck"}, num_classes=5
  )
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 16, 3))
  v = jax.jit(m.init)(jax.random.PRNGKey(1), x)
  out = jax.jit(m.apply)(v, x)
  d = _encoder().feature_dim
  assert out["emb"].shape == (4, d) and out["logits"].shape == (4, 5)
  # eval feature = BNNeck(emb); logits = feat @ W (no bias), checked by hand.
  neck = heads.BNNeck().apply(
    {
      "params": v["params"]["bnneck"],
      "batch_stats": v["batch_stats"]["bnneck"],
    },
    out["emb"],
  )
  np.testing.assert_allclose(out["eval"], neck, rtol=1e-6)
  np.testing.assert_allclose(out["feat"], neck, rtol=1e-6)
  w = v["params"]["classifier"]["kernel"]
  assert set(v["params"]["classifier"]) == {"kernel"}
  np.testing.assert_allclose(out["logits"], neck @ w, rtol=1e-5, atol=1e-6)


def test_projection_head_and_bfloat16_compute():
  m = model_lib.make_model(
    {
      "encoder": "resnet_tiny",
      "head": "projection",
      "proj_hidden": 32,
      "proj_out": 8,
      "dtype": "bfloat16",
    }
  )
  x = jnp.ones((2, 32, 16, 3))
  v = jax.jit(m.init)(jax.random.PRNGKey(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))
  out = jax.jit(m.apply)(v, x)
  assert out["proj"].shape == (2, 8) and out["proj"].dtype == jnp.float32
  assert out["emb"].dtype == jnp.float32
  # bf16 compute is close to f32 compute with the same parameters.
  m32 = model_lib.make_model(
    {
      "encoder": "resnet_tiny",
      "head": "projection",
      "proj_hidden": 32,
      "proj_out": 8,
    }
  )
  np.testing.assert_allclose(
    out["proj"], m32.apply(v, x)["proj"], rtol=0.1, atol=0.1
  )


def test_bad_model_config():
  with pytest.raises(ValueError, match="num_classes must be > 0"):
    model_lib.make_model({"encoder": "resnet_tiny", "head": "bnneck"})
  with pytest.raises(ValueError, match="is not one of"):
    model_lib.make_model({"encoder": "resnet_tiny", "head": "mlp"})
  with pytest.raises(ValueError, match="encoder is required"):
    model_lib.make_model({"head": "none"})

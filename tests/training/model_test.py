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


def test_embedding_margin_and_dino_heads():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 16, 3))
  d = _encoder().feature_dim
  m = model_lib.make_model(
    {"encoder": "resnet_tiny", "head": "margin", "proj_out": 8}, num_classes=3
  )
  v = m.init(jax.random.PRNGKey(1), x)
  out = m.apply(v, x)
  k = v["params"]["embedding"]
  np.testing.assert_allclose(
    out["proj"], out["emb"] @ k["kernel"] + k["bias"], rtol=1e-5, atol=1e-6
  )
  np.testing.assert_array_equal(out["eval"], out["proj"])
  np.testing.assert_array_equal(
    out["class_weights"], v["params"]["class_weights"]
  )
  assert out["class_weights"].shape == (3, 8)
  with pytest.raises(ValueError, match="num_classes"):
    model_lib.make_model({"encoder": "resnet_tiny", "head": "margin"})
  dino = {
    "encoder": "resnet_tiny",
    "head": "dino",
    "proj_hidden": 16,
    "proj_out": 8,
    "proj_layers": 3,
    "dino_out": 32,
  }
  m = model_lib.make_model(dino)
  v = m.init(jax.random.PRNGKey(1), x)
  out = m.apply(v, x)
  assert out["dino"].shape == (4, 32) and out["eval"].shape == (4, d)
  np.testing.assert_array_equal(out["eval"], out["emb"])
  # dino_bn: BatchNorm after each hidden Dense, batch statistics in train.
  m_bn = model_lib.make_model(dict(dino, dino_bn=True))
  v_bn = m_bn.init(jax.random.PRNGKey(1), x)
  assert set(v_bn["batch_stats"]["dino_head"]) == {"bn0", "bn1"}
  out_bn, _ = m_bn.apply(v_bn, x, train=True, mutable=["batch_stats"])
  assert out_bn["dino"].shape == (4, 32)
  assert not np.allclose(out_bn["dino"], out["dino"], atol=1e-3)


def test_domain_discriminator_trains_only_itself_or_only_the_encoder():
  rng = np.random.default_rng(0)
  emb = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
  disc = heads.DomainDiscriminator(num_domains=3, hidden_dim=4)
  v = disc.init(jax.random.PRNGKey(0), emb)
  p = jax.tree.map(np.asarray, v["params"])
  want = np.maximum(np.asarray(emb) @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"]
  logits, adv = disc.apply(v, emb)
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)

  def grads(which):
    f = lambda params, e: disc.apply({"params": params}, e)[which].sum()
    return jax.grad(f, argnums=(0, 1))(v["params"], emb)

  g_params, g_emb = grads(0)  # discriminator path
  assert np.abs(np.asarray(g_emb)).max() == 0
  assert max(np.abs(np.asarray(g)).max() for g in jax.tree.leaves(g_params))
  g_params, g_emb = grads(1)  # adversarial path
  assert np.abs(np.asarray(g_emb)).max() > 0
  assert all(
    np.abs(np.asarray(g)).max() == 0 for g in jax.tree.leaves(g_params)
  )
  m = model_lib.make_model(
    {"encoder": "resnet_tiny", "head": "projection", "domain_classes": 2}
  )
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 16, 3))
  out = m.apply(m.init(jax.random.PRNGKey(1), x), x)
  assert out["domain_logits"].shape == out["domain_logits_adv"].shape == (4, 2)

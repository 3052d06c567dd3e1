"""The methods' networks: outputs, heads, compute dtype, and the retrieval
encoder (`encoders.Backbone`) that leaves a run equal to the network's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import encoders
from idlearn.encoders import heads
from idlearn.encoders.backbone import select_params
from idlearn.methods.contrastive import ProjectionNet
from idlearn.methods.dino import DinoNet
from idlearn.methods.margin import MarginNet
from idlearn.methods.supervised import ClassifierNet
from idlearn.training import model as model_lib

X = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 16, 3))


def _tiny():
  return encoders.get_encoder("resnet_tiny")


def _backbone_outputs(net, variables, neck, neck_dim=0):
  """`encoders.Backbone` on the network's own encoder + neck parameters."""
  bb = encoders.Backbone(encoder=_tiny(), neck=neck, neck_dim=neck_dim)
  sub = {k: select_params(v, neck) for k, v in variables.items()}
  return bb.apply(sub, X)


def test_bnneck_classifier_outputs_and_backbone():
  m = ClassifierNet(encoder=_tiny(), neck="bnneck", num_classes=5)
  v = jax.jit(m.init)(jax.random.PRNGKey(1), X)
  out = jax.jit(m.apply)(v, X)
  d = _tiny().feature_dim
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
  got = _backbone_outputs(m, v, "bnneck")
  assert set(got) == {"emb", "eval", "feat"}
  np.testing.assert_array_equal(got["eval"], out["eval"])
  np.testing.assert_array_equal(got["emb"], out["emb"])


def test_projection_net_and_bfloat16_compute():
  make, dtype = model_lib.encoder_factory(
    {"encoder": "resnet_tiny", "dtype": "bfloat16"}
  )
  m = ProjectionNet(encoder=make(), proj_hidden=32, proj_out=8, dtype=dtype)
  x = jnp.ones((2, 32, 16, 3))
  v = jax.jit(m.init)(jax.random.PRNGKey(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))
  out = jax.jit(m.apply)(v, x)
  assert out["proj"].shape == (2, 8) and out["proj"].dtype == jnp.float32
  assert out["emb"].dtype == jnp.float32
  # bf16 compute is close to f32 compute with the same parameters.
  m32 = ProjectionNet(encoder=_tiny(), proj_hidden=32, proj_out=8)
  np.testing.assert_allclose(
    out["proj"], m32.apply(v, x)["proj"], rtol=0.1, atol=0.1
  )
  assert set(_backbone_outputs(m, v, "none")) == {"emb", "eval"}


def test_bad_model_config():
  with pytest.raises(ValueError, match="expected one of"):
    model_lib.encoder_factory({"encoder": "resnet_tiny", "dtype": "f16"})
  with pytest.raises(ValueError, match="unknown encoder name"):
    model_lib.encoder_factory({"encoder": "resnet_huge"})
  with pytest.raises(ValueError, match="encoder is required"):
    model_lib.encoder_factory({})


def test_embedding_margin_and_dino_heads():
  m = MarginNet(encoder=_tiny(), neck_dim=8, num_classes=3)
  v = m.init(jax.random.PRNGKey(1), X)
  out = m.apply(v, X)
  k = v["params"]["embedding"]
  np.testing.assert_allclose(
    out["proj"], out["emb"] @ k["kernel"] + k["bias"], rtol=1e-5, atol=1e-6
  )
  np.testing.assert_array_equal(out["eval"], out["proj"])
  np.testing.assert_array_equal(
    out["class_weights"], v["params"]["class_weights"]
  )
  assert out["class_weights"].shape == (3, 8)
  got = _backbone_outputs(m, v, "embedding", 8)
  np.testing.assert_array_equal(got["eval"], out["eval"])
  d = _tiny().feature_dim
  dino = dict(hidden=16, bottleneck=8, layers=3, prototypes=32)
  m = DinoNet(encoder=_tiny(), **dino)
  v = m.init(jax.random.PRNGKey(1), X)
  out = m.apply(v, X)
  assert out["dino"].shape == (4, 32) and out["eval"].shape == (4, d)
  np.testing.assert_array_equal(out["eval"], out["emb"])
  # head_bn: BatchNorm after each hidden Dense, batch statistics in train.
  m_bn = DinoNet(encoder=_tiny(), head_bn=True, **dino)
  v_bn = m_bn.init(jax.random.PRNGKey(1), X)
  assert set(v_bn["batch_stats"]["dino_head"]) == {"bn0", "bn1"}
  out_bn, _ = m_bn.apply(v_bn, X, train=True, mutable=["batch_stats"])
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
  m = ProjectionNet(encoder=_tiny(), num_cameras=2)
  out = m.apply(m.init(jax.random.PRNGKey(1), X), X)
  assert out["domain_logits"].shape == out["domain_logits_adv"].shape == (4, 2)

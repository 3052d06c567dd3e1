"""The anitalker method: config checks, the network's codes and retrieval
feature, the one-backward-pass split of the CLUB terms (estimator <- its
NLL only, encoder <- the bound only), 1 == 8 devices, and the config's
arms."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fake_setup import fake_setup

from configs import anitalker_mars
from idlearn import encoders, losses, methods, sharding
from idlearn.encoders.backbone import select_params
from idlearn.methods import Context, Network, anitalker

B, C = 8, 4  # frame pairs, tracklet classes
SMALL = dict(id_dim=16, motion_dim=8, motion_hidden=16, club_hidden=16,
             decoder_widths=(8, 8), num_classes=C)  # fmt: skip
_rng = np.random.default_rng(0)
SRC = _rng.normal(size=(B, 32, 16, 3)).astype(np.float32)
TGT = (SRC + 0.3 * _rng.normal(size=SRC.shape)).astype(np.float32)
BATCH = {"tracklet": np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)}


def _method(cfg=None, mesh=None, sampler="frame_pairs", size=(32, 16)):
  setup = fake_setup(
    mesh=mesh or sharding.make_data_mesh(jax.devices()[:1]),
    make_encoder=lambda: encoders.get_encoder("resnet_tiny"),
    input={"name": "fake", "sampler": sampler, "image_size": size},
    views={"source": 1, "target": 1},
    num_classes=lambda: C,
  )
  return methods.make_method(
    {"name": "anitalker", **SMALL, **(cfg or {})}, setup
  )


def _init(method):
  net = method.network()
  return net, jax.jit(net.init)(jax.random.key(1), jnp.asarray(SRC))


def _loss_fn(method, net, variables, views=None, batch=None):
  """params -> (loss, aux) of one step's objective, as the train step
  differentiates it."""
  views = views or {"source": (SRC,), "target": (TGT,)}
  ctx = Context(extras={}, mined=None, step=jnp.int32(0),
                rng=jax.random.key(2))  # fmt: skip

  def f(params):
    n = Network(net, params, variables["batch_stats"], train=True)
    loss, aux, _ = method.loss(n, views, batch or BATCH, ctx)
    return loss, aux

  return f


def test_bad_configs_name_the_field():
  with pytest.raises(ValueError, match="club='exact'"):
    _method({"club": "exact"})
  with pytest.raises(ValueError, match="mi_weight=-1"):
    _method({"mi_weight": -1.0})
  with pytest.raises(ValueError, match="motion_dim=0"):
    _method({"motion_dim": 0})
  with pytest.raises(ValueError, match="sampler='frame_pairs'"):
    _method(sampler="pk")
  with pytest.raises(ValueError, match="multiple of .* = 16"):
    _method({"decoder_widths": (8, 8, 8)}, size=(36, 16))


def test_codes_retrieval_feature_and_probe_hook():
  method = _method()
  net, v = _init(method)
  params = v["params"]
  assert set(params) == {
    "encoder", "embedding", "motion", "decoder", "class_weights", "club",
  }  # fmt: skip
  assert set(params["club"]) == {"mu"}  # CLUBMean by default
  out = jax.jit(net.apply)(v, SRC, identity=jnp.ones((B, 16)))
  assert out["proj"].shape == (B, 16) and out["motion"].shape == (B, 8)
  assert out["recon"].shape == (B, 16, 8, 3)  # recon_stride 2
  np.testing.assert_allclose(
    np.linalg.norm(out["identity"], axis=1), 4.0, rtol=1e-5
  )  # unit * sqrt(16)
  assert "recon" not in jax.jit(net.apply)(v, SRC)  # no identity: no decoder
  # the retrieval encoder (Backbone, embedding neck) gives "eval" = "proj"
  bb = encoders.Backbone(
    encoder=encoders.get_encoder("resnet_tiny"),
    neck=method.neck,
    neck_dim=method.neck_dim,
  )
  bv = {k: select_params(v[k], method.neck) for k in v}
  feats = jax.jit(bb.apply)(bv, SRC)
  np.testing.assert_allclose(feats["eval"], out["proj"], rtol=1e-5)
  feats = jax.tree.map(np.asarray, feats)
  codes = method.probe_codes(params, feats)
  np.testing.assert_allclose(codes["motion"], out["motion"], rtol=1e-5)
  np.testing.assert_allclose(codes["identity"] * 4, out["identity"], rtol=1e-5)
  np.testing.assert_array_equal(codes["trunk"], feats["emb"])


W = 0.7  # the MI weight of the gradient tests


@functools.cache
def _term_grads(devices):
  """On `devices` devices: (the gradient of each of [club_nll, mi, loss]
  (leaves [3, ...]), (loss, aux)) of one step's objective; one compile."""
  mesh = sharding.make_data_mesh(jax.devices()[:devices])
  method = _method({"mi_weight": W, "club": "gaussian"}, mesh=mesh)
  net, v = _init(method)
  put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
  views = {"source": (put(SRC),), "target": (put(TGT),)}
  f = _loss_fn(method, net, v, views, put(BATCH))

  def terms(params):
    loss, aux = f(params)
    return jnp.stack([aux["club_nll"], aux["mi"], loss]), (loss, aux)

  return jax.jit(jax.jacrev(terms, has_aux=True))(v["params"])


def test_one_backward_pass_splits_the_club_terms():
  grads, (loss, aux) = _term_grads(1)
  mi = max(float(aux["mi"]), 0.0)  # mi_hinge
  want = aux["recon"] + aux["aam"] + W * mi + aux["club_nll"]
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  g_nll, g_mi, g_total = (
    jax.tree.map(lambda g, i=i: g[i], grads) for i in range(3)
  )

  def peak(tree):
    return max(float(jnp.abs(x).max()) for x in jax.tree.leaves(tree))

  # the estimator learns only from its likelihood ...
  assert peak(g_nll["club"]) > 0 and peak(g_mi["club"]) == 0
  chex.assert_trees_all_close(g_total["club"], g_nll["club"], rtol=1e-6)
  # ... and the codes (encoder, both heads) only from the bound
  for part in ("encoder", "embedding", "motion"):
    assert peak(g_nll[part]) == 0, part
    assert peak(g_mi[part]) > 0, part
  # the decoder and the class centres get nothing from CLUB
  for part in ("decoder", "class_weights"):
    assert peak(g_nll[part]) == peak(g_mi[part]) == 0, part
    assert peak(g_total[part]) > 0, part


def test_1_and_8_devices_agree():
  chex.assert_trees_all_close(
    _term_grads(1), _term_grads(8), rtol=2e-4, atol=1e-5
  )


def test_config_arms_differ_only_in_the_mi_weight():
  full = anitalker_mars.get_config().to_dict()
  base = anitalker_mars.get_config("mi=0").to_dict()
  assert full["method"].pop("mi_weight") > 0 == base["method"].pop("mi_weight")
  assert full == base
  assert full["evals"]["mars_probe"]["type"] == "code_probe"
  assert full["input"]["sampler"] == "frame_pairs"
  s1 = anitalker_mars.get_config("seed=1").to_dict()
  assert s1["seed"] == 1
  assert {**s1, "seed": 0} == anitalker_mars.get_config().to_dict()
  with pytest.raises(ValueError, match="club='exact'"):
    anitalker_mars.get_config("club=exact")


def test_identity_code_is_scaled_unit_vector():
  z = jnp.asarray(_rng.normal(size=(5, 9)), jnp.float32)
  got = anitalker.identity_code(z)
  np.testing.assert_allclose(got, losses.l2_normalize(z) * 3.0, rtol=1e-6)

"""The fsfm method: the ViT on visible patches only, the decoders' mask
tokens, the network's outputs and retrieval encoder, one train step of
each arm (FSFM and MIM alone: which parts learn, the loss formula), the
config checks, and configs/fsfm_att_faces.py's arms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fake_setup import fake_setup

from configs import fsfm_att_faces
from idlearn import encoders, methods
from idlearn.encoders.backbone import select_params
from idlearn.errors import ConfigError
from idlearn.methods import fsfm

SIZE = (32, 24)  # 4 x 3 patches of 8: 9 masked, 3 visible
L = 12
X = jax.random.normal(jax.random.key(0), (8, *SIZE, 3))
SMALL = dict(rep_width=16, rep_depth=1, rep_heads=2, pix_width=16,
             pix_depth=1, pix_heads=2, proj_hidden=16, proj_out=8,
             pred_hidden=16)  # fmt: skip


def _vit(depth=1):
  return encoders.get_encoder(
    "vit_ti8", width=16, depth=depth, num_heads=2, img_size=SIZE,
    pooling="mean",
  )  # fmt: skip


def _method(cfg=None, encoder=_vit):
  setup = fake_setup(
    mesh=None,
    make_encoder=encoder,
    input={"name": "att_faces", "sampler": "random", "k": 4},
    num_classes=lambda: 28,
  )
  return methods.make_method({"name": "fsfm", **SMALL, **(cfg or {})}, setup)


def test_vit_encodes_only_the_kept_patches():
  vit = _vit(depth=1)
  v = jax.jit(vit.init)(jax.random.key(1), X)
  apply = jax.jit(lambda x, keep: vit.apply(v, x, keep=keep))
  full = jax.jit(vit.apply)(v, X)
  every = apply(X, jnp.tile(jnp.arange(L), (8, 1)))
  np.testing.assert_allclose(every[1]["tokens"], full[1]["tokens"], atol=1e-6)
  # attention is permutation-equivariant: kept tokens follow their indices
  a = np.asarray(apply(X, jnp.tile(jnp.array([0, 5, 9]), (8, 1)))[1]["tokens"])
  b = np.asarray(apply(X, jnp.tile(jnp.array([9, 0, 5]), (8, 1)))[1]["tokens"])
  assert a.shape == (8, 4, 16)
  np.testing.assert_allclose(b[:, [0, 2, 3, 1]], a, atol=1e-5)
  # no blocks: each kept token is the whole image's token at its index
  vit0 = _vit(depth=0)
  v0 = jax.jit(vit0.init)(jax.random.key(1), X)
  keep = jnp.array([[1, 4, 11]] * 4 + [[0, 2, 3]] * 4)
  tokens = jax.jit(lambda k: vit0.apply(v0, X, keep=k)[1]["tokens"][:, 1:])
  got = tokens(keep)
  want = np.asarray(tokens(jnp.tile(jnp.arange(L), (8, 1))))
  want = np.take_along_axis(want, np.asarray(keep)[:, :, None], axis=1)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_decoder_puts_visible_tokens_back_and_mask_tokens_elsewhere():
  pos = fsfm.sincos_2d(8, (4, 3))
  assert pos.shape == (13, 8) and not pos[0].any()
  assert len({row.tobytes() for row in pos}) == 13
  dec = fsfm.TokenDecoder(width=8, depth=0, num_heads=2, out_dim=5,
                          grid=(4, 3))  # fmt: skip
  full = jax.random.normal(jax.random.key(2), (2, 1 + L, 16))
  v = jax.jit(dec.init)(jax.random.key(3), full)
  keep = jnp.array([[0, 4, 7], [2, 3, 11]])
  visible = jnp.concatenate(
    [full[:, :1], jnp.take_along_axis(full[:, 1:], keep[:, :, None], 1)], 1
  )
  out = np.asarray(jax.jit(dec.apply)(v, visible, keep))  # [2, 13, 5]
  ref = np.asarray(jax.jit(dec.apply)(v, full))
  for i, k in enumerate(np.asarray(keep)):
    # depth 0: token-wise, so visible tokens decode as in the full sequence
    np.testing.assert_allclose(out[i, 1 + k], ref[i, 1 + k], atol=1e-5)
    np.testing.assert_allclose(out[i, 0], ref[i, 0], atol=1e-5)
  masked = [sorted(set(range(L)) - set(np.asarray(k))) for k in keep]
  # a masked position holds the mask token: the same in both images
  common = sorted(set(masked[0]) & set(masked[1]))
  np.testing.assert_allclose(
    out[0, 1 + np.array(common)], out[1, 1 + np.array(common)], atol=1e-6
  )


def test_network_outputs_teacher_branch_and_retrieval_encoder():
  net = _method().network()
  v = jax.jit(net.init)(jax.random.key(1), X)
  assert set(v["params"]) == {"encoder", "rep_decoder", "pixel_decoder",
                              "projector", "predictor"}  # fmt: skip
  bb = encoders.Backbone(encoder=_vit(), neck="none")

  @jax.jit
  def outputs(v, x, keep):
    return (
      net.apply(v, x, keep=keep),
      net.apply(v, x),
      net.apply(v, x, method=fsfm.FSFMNet.target),
      bb.apply({"params": select_params(v["params"], "none")}, x),
    )

  keep = jnp.tile(jnp.array([1, 6, 10]), (8, 1))
  out, whole, target, got = outputs(v, X, keep)
  assert out["pixels"].shape == (8, L, 8 * 8 * 3)
  assert out["proj"].shape == out["pred"].shape == (8, 8)
  assert out["emb"].shape == (8, 16)
  np.testing.assert_allclose(target["proj"], whole["proj"], atol=1e-6)
  assert not np.allclose(out["proj"], whole["proj"], atol=1e-3)  # masked
  # the retrieval feature: the encoder alone on the whole image
  np.testing.assert_allclose(got["eval"], whole["eval"], atol=1e-6)
  np.testing.assert_allclose(got["eval"], whole["emb"], atol=1e-6)


@pytest.mark.parametrize("w_cl", [0.1, 0.0])
def test_loss_of_each_arm_and_the_parts_it_trains(w_cl):
  method = _method({"w_cl": w_cl})
  net = method.network()
  params = jax.jit(net.init)(jax.random.key(1), X)["params"]
  teacher = jax.tree.map(lambda p: p + 0.01, params)
  ctx = methods.Context(extras={}, mined=None, step=0, rng=jax.random.key(5))

  @jax.jit
  def loss_and_grads(params):
    def loss(params):
      online = methods.Network(net, params, {}, train=True,
                               teacher_params=teacher)  # fmt: skip
      value, aux, _ = method.loss(online, {"image": (X,)}, {}, ctx)
      return value, aux

    return jax.value_and_grad(loss, has_aux=True)(params)

  (value, aux), grads = loss_and_grads(params)
  m = {k: float(v) for k, v in aux.items()}
  assert np.isfinite(float(value)) and all(np.isfinite(list(m.values())))
  want = m["rec_all"] + 0.007 * m["rec_sfr"] + w_cl * m.get("cl", 0.0)
  np.testing.assert_allclose(float(value), want, rtol=1e-5)
  assert 0 < m["sfr_patches"] <= 9  # the covered region: masked patches
  assert ("cl" in m) == (w_cl > 0)
  if w_cl:
    assert -0.5 <= m["cl"] <= 0.5 and m["cl"] == pytest.approx(-m["cos"] / 2)
  # MIM trains the encoder and the pixel decoder; L_cl the rest
  learns = {"encoder": True, "pixel_decoder": True, "rep_decoder": w_cl > 0,
            "projector": w_cl > 0, "predictor": w_cl > 0}  # fmt: skip
  for part, want_grad in learns.items():
    norm = float(optax.tree.norm(grads[part]))
    assert (norm > 0) == want_grad, (part, norm)


def test_masks_of_a_step_are_exact_and_cover_the_region():
  method = _method()
  mask, region, chosen = jax.jit(method.masks, static_argnums=1)(
    jax.random.key(4), 8
  )
  np.testing.assert_array_equal(np.asarray(mask).sum(1), 9)
  assert not np.any(np.asarray(region) & ~np.asarray(mask))
  assert method.num_visible == 3 and 0 <= int(chosen) < 6


def test_bad_configs_name_the_field():
  with pytest.raises(ConfigError, match="config.model.encoder"):
    _method(encoder=lambda: encoders.get_encoder("resnet_tiny"))
  with pytest.raises(ConfigError, match="ema_decay"):
    _method({"ema_decay": 0.0})
  _method({"ema_decay": 0.0, "w_cl": 0.0})  # MIM alone needs no teacher
  with pytest.raises(ConfigError, match="mask_ratio"):
    _method({"mask_ratio": 1.0})
  with pytest.raises(ConfigError, match="layout"):
    _method({"layout": "lfw"})
  with pytest.raises(ConfigError, match="rep_width=18"):
    _method({"rep_width": 18})


def test_config_arms_share_data_model_budget_and_evaluation():
  arms = {m: fsfm_att_faces.get_config(f"method={m}").to_dict()
          for m in fsfm_att_faces.ARMS}  # fmt: skip
  shared = ("total_steps", "seed", "input", "model", "optim", "evals")
  for key in shared:
    assert arms["fsfm"][key] == arms["mim"][key] == arms["dino"][key], key
  assert arms["fsfm"]["views"] == arms["mim"]["views"]
  assert arms["fsfm"]["method"] == dict(arms["mim"]["method"], w_cl=0.1)
  assert arms["mim"]["method"]["w_cl"] == 0.0
  assert arms["dino"]["method"]["name"] == "dino"
  assert arms["fsfm"]["input"]["sampler"] == "random"  # no labels
  assert arms["fsfm"]["model"]["encoder_kw"]["pooling"] == "mean"
  evals = arms["fsfm"]["evals"]
  assert evals["att_faces_ema"] == dict(evals["att_faces"], use_ema=True)
  seed1 = fsfm_att_faces.get_config("method=fsfm,seed=1").to_dict()
  assert seed1 == dict(arms["fsfm"], seed=1)
  with pytest.raises(ValueError, match="method='mae'"):
    fsfm_att_faces.get_config("method=mae")

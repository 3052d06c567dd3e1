"""The SIE method: config checks, the split network and its retrieval
feature, the hypernetwork predictor, one train step (both arms) with views
that hand over their augmentation parameters, and the config's arms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fake_setup import fake_setup

from configs import sie_pku_reid, simclr_pku_reid
from idlearn import augment, encoders, methods
from idlearn.encoders.backbone import select_params
from idlearn.methods import sie
from idlearn.training import inputs, state, step

D = 16  # the tiny test encoder's representation (no feature_dim: traced)
X = jax.random.normal(jax.random.key(0), (8, 16, 8, 3))
# cheap ops (a compiled step is most of these tests' time)
VIEWS = {"global": dict(count=2, params=True, pad=1, flip=0.5)}
SMALL = dict(equi=8, mlp=(16, 16, 8), transforms=("pad_y", "pad_x", "flip"))


def _method(tiny, cfg=None, views=VIEWS):
  setup = fake_setup(
    make_encoder=tiny.tiny_encoder,
    input={"name": "fake", "image_size": (16, 8)},
    views=inputs.view_counts(views),
    num_classes=lambda: 4,
  )
  return methods.make_method({"name": "sie", **SMALL, **(cfg or {})}, setup)


def test_bad_configs_name_the_field_and_value(tiny):
  with pytest.raises(ValueError, match="equi=16: expected 0 .* below .* 16"):
    _method(tiny, {"equi": 16})
  with pytest.raises(ValueError, match=r"mlp=\(16, 0\)"):
    _method(tiny, {"mlp": (16, 0)})
  with pytest.raises(ValueError, match="transforms=.*'zoom'"):
    _method(tiny, {"transforms": ("zoom",)})
  with pytest.raises(ValueError, match=r"transforms=\(\)"):
    _method(tiny, {"transforms": ()})
  with pytest.raises(ValueError, match="equi_weight=-1.0: expected >= 0"):
    _method(tiny, {"equi_weight": -1.0})
  no_params = {"global": dict(VIEWS["global"], params=False)}
  with pytest.raises(ValueError, match=r"set config.views.global.params"):
    _method(tiny, views=no_params)
  with pytest.raises(ValueError, match=r"needs views \{'global': 2\}"):
    _method(tiny, views={"global": dict(params=True)})
  _method(tiny, {"equi": 0}, views=no_params)  # the baseline needs no params


def test_network_split_projectors_and_retrieval_feature(tiny):
  method = _method(tiny)
  assert (method.neck, method.neck_dim) == ("slice", D - 8)
  assert method.mlp_inv == method.mlp_equi == (8, 8, 4)  # half of mlp each
  net = method.network()
  v = jax.jit(net.init)(jax.random.key(1), X)
  params = v["params"]
  assert set(params) == {"encoder", "projector_inv", "projector_equi",
                         "hypernet"}  # fmt: skip
  assert params["hypernet"].shape == (4, 4, 4)  # [1 + transforms, d, d]
  assert "bias" not in params["projector_inv"]["dense2"]  # no last bias
  z = jnp.ones((8, 4))
  out = jax.jit(functools.partial(net.apply, z=z))(v, X)
  assert out["emb"].shape == (8, D) and out["inv"].shape == (8, 4)
  assert out["equi"].shape == out["pred"].shape == (8, 4)
  # retrieval: the invariant part of the representation, also through the
  # encoders.Backbone that evaluators, idlearn.load and exports use
  np.testing.assert_array_equal(out["eval"], out["emb"][:, : D - 8])
  bb = encoders.Backbone(
    encoder=tiny.tiny_encoder(),
    neck=method.neck,
    neck_dim=method.neck_dim,
  )
  sub = {k: select_params(t, method.neck) for k, t in v.items()}
  np.testing.assert_array_equal(jax.jit(bb.apply)(sub, X)["eval"], out["eval"])
  # baseline arm: one projector on the whole representation
  base = _method(tiny, {"equi": 0})
  assert (base.neck, base.neck_dim) == ("none", 0)
  bv = jax.jit(base.network().init)(jax.random.key(1), X)
  assert set(bv["params"]) == {"encoder", "projector"}


def test_predictor_is_a_z_weighted_sum_of_matrices():
  rng = np.random.default_rng(0)
  a, x, z = (
    rng.normal(size=(3, 4, 4)),
    rng.normal(size=(5, 4)),
    rng.normal(size=(5, 3)),
  )
  got = sie.predict(jnp.asarray(a), jnp.asarray(x), jnp.asarray(z))
  want = [np.tensordot(z[n], a, 1) @ x[n] for n in range(5)]  # W(z_n) x_n
  np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)
  # z: a leading 1, then the relative parameters (flip: |difference|)
  p1, p2 = np.zeros((2, 2, len(augment.PARAM_NAMES)), np.float32)
  i_scale, i_flip = (
    augment.PARAM_NAMES.index(n) for n in ("crop_scale", "flip")
  )
  p1[:, i_scale], p2[:, i_scale] = [0.1, -0.4], [-0.2, 0.3]
  p1[:, i_flip], p2[:, i_flip] = [1, 0], [0, 0]
  z = sie.transformation(p1, p2, ("crop_scale", "flip"))
  np.testing.assert_allclose(z, [[1, -0.3, 1], [1, 0.7, 0]], rtol=1e-6)


@pytest.mark.parametrize("equi", [8, 0])
def test_one_train_step_with_augmentation_parameters(tiny, equi):
  method = _method(tiny, {"equi": equi})
  net = method.network()
  variables = net.init(jax.random.key(1), X)
  tx = optax.adam(1e-3)
  st = state.create(variables, tx, jax.random.key(2), extras={"method": {}})
  fn = jax.jit(
    functools.partial(
      step.train_step,
      method=method,
      network=net,
      tx=tx,
      views_fn=inputs.make_views_fn(VIEWS),
    )
  )
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 8, 3), np.uint8)
  new, metrics = fn(st, {"image": images, "id": np.arange(8)})
  keys = ("inv", "std", "cov") + (("equi", "pred_std") if equi else ())
  for key in ("loss", *keys):
    assert np.isfinite(float(metrics[key])), key
  moved = jax.tree.map(
    lambda a, b: float(jnp.abs(a - b).max()), new.params, st.params
  )
  for part in new.params:
    assert max(jax.tree.leaves(moved[part])) > 0, part


def test_config_transforms_are_what_the_views_vary():
  every = dict(
    crop_scale=(0.4, 1.0), pad=2, flip=0.5, color_jitter=(0.4, 0.0, 0.3, 0.1),
    grayscale=0.2, blur=0.5, style_standardization=1.0, erasing=0.5,
  )  # fmt: skip
  specs = [every, simclr_pku_reid.VIEWS["reid_bss"], {}]
  images = np.random.default_rng(1).integers(0, 256, (16, 16, 8, 3), np.uint8)
  _, params = jax.jit(
    lambda k, x: augment.make_views(k, x, specs, with_params=True)
  )(jax.random.key(0), images)
  for spec, p in zip(specs, params, strict=True):
    varies = np.asarray(p).std(0) > 0
    if spec.get("style_standardization", 0) > 0:  # drawn once per batch
      varies[augment.PARAM_NAMES.index("style")] = True
    want = tuple(
      n for n, v in zip(augment.PARAM_NAMES, varies, strict=True) if v
    )
    assert sie_pku_reid.transforms_of(spec) == want, spec


def test_config_arms_differ_only_in_equi_at_barlow_twins_budget():
  for arg in ("", "smoke"):
    full = sie_pku_reid.get_config(arg).to_dict()
    base = sie_pku_reid.get_config(f"equi=0,{arg}").to_dict()
    assert full["method"]["equi"] > 0 == base["method"]["equi"]
    base["method"]["equi"] = full["method"]["equi"]
    assert base == full
  c = sie_pku_reid.get_config()
  bt = __import__("configs.barlow_twins_pku_reid").barlow_twins_pku_reid
  bt = bt.get_config().to_dict()
  for key in ("total_steps", "input", "model", "optim"):
    assert c.to_dict()[key] == bt[key], key
  views = dict(c.views["global"])
  assert views.pop("params") is True and views == dict(bt["views"]["global"])
  assert c.evals.pku_reid_r2.equi_dims == c.method.equi == 64
  assert c.evals.pku_reid_r2.transforms == c.method.transforms
  s0, s1 = (sie_pku_reid.get_config(f"seed={s}") for s in (0, 1))
  assert (s0.seed, s1.seed) == (0, 1)

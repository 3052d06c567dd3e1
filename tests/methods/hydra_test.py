"""The hydra method: config checks, the network's gate and heads, the pair
labels `prepare` draws (1 == 8 devices), and one train step on
resnet_tiny."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fake_setup import fake_setup

from idlearn import encoders, methods, sharding
from idlearn.encoders.backbone import select_params
from idlearn.methods import hydra
from idlearn.training import state, step

C = 9  # classes of the label table
X = jax.random.normal(jax.random.key(0), (16, 32, 16, 3))
Y1 = np.repeat(np.array([0, 3, 5, 8]), 4).astype(np.int32)  # P4 x K4


def _mesh(n):
  return sharding.make_data_mesh(jax.devices()[:n])


def _method(cfg=None, mesh=None, sampler="pk"):
  setup = fake_setup(
    mesh=mesh or _mesh(1),
    make_encoder=lambda: encoders.get_encoder("resnet_tiny"),
    input={"name": "fake", "sampler": sampler, "k": 4},
    num_classes=lambda: C,
  )
  small = dict(proj_hidden=32, proj_out=8, gate_embed=16, gate_hidden=32)
  return methods.make_method({"name": "hydra", **small, **(cfg or {})}, setup)


def test_bad_configs_name_the_field():
  with pytest.raises(ValueError, match="pairs='random'"):
    _method({"pairs": "random"})
  with pytest.raises(ValueError, match="gate='gumbel'"):
    _method({"gate": "gumbel"})
  with pytest.raises(ValueError, match="temperature"):
    _method({"temperature": 0.0})
  with pytest.raises(ValueError, match="sampler='pk'"):
    _method(sampler="random")
  with pytest.raises(ValueError, match="proj_out=0"):
    _method({"proj_out": 0})
  with pytest.raises(ValueError, match="pairs='same'"):
    hydra.pair_labels(jax.random.key(0), jnp.asarray(Y1), "same")


@pytest.mark.parametrize("gate", ["fuse", "product", "open"])
def test_network_gate_heads_and_retrieval_feature(gate):
  net = _method({"gate": gate, "probe": True}).network()
  v = jax.jit(net.init)(jax.random.key(1), X)
  params = v["params"]
  y2 = np.roll(Y1, 5)
  out = jax.jit(net.apply)(v, X, labels=Y1, pair_labels=y2)
  assert out["proj"].shape == (16, 8) and out["gate"].shape == (16, 8)
  assert out["probe_logits"].shape == (16, C)
  np.testing.assert_array_equal(out["eval"], out["emb"])  # the backbone's
  g = np.asarray(out["gate"])
  if gate == "open":
    assert "gate" not in params and np.all(g == 1)
  else:
    assert params["gate"]["label_embedding"]["embedding"].shape == (C, 16)
    assert np.all((g > 0) & (g < 1))
    # "fuse" averages the two rows, "product" multiplies: both symmetric.
    swapped = jax.jit(net.apply)(v, X, labels=y2, pair_labels=Y1)["gate"]
    np.testing.assert_allclose(swapped, g, rtol=1e-6)
  # the projector ends with a LayerNorm (unit scale, zero shift at init)
  np.testing.assert_allclose(out["proj"].mean(1), 0, atol=1e-5)
  # without labels (evaluation) there is no gate; retrieval needs only the
  # encoder: projector, gate and probe stay out of the Backbone's params
  assert "gate" not in jax.jit(net.apply)(v, X)
  assert set(select_params(params, "none")) == {"encoder"}


@pytest.mark.parametrize("pairs", ["arbitrary", "identical", "distinct"])
def test_pair_labels_on_1_and_8_devices(pairs):
  ys = np.random.default_rng(0).permutation(Y1)
  outs = []
  for n in (1, 8):
    mesh = _mesh(n)
    prepare = jax.jit(_method({"pairs": pairs}, mesh).prepare)
    batch = {"id": ys + 100, "label": ys}
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    outs.append(prepare(jax.random.key(3), {}, batch)[1]["pair_label"])
  chex.assert_trees_all_equal(outs[0], outs[1])
  y2 = np.asarray(outs[0])
  if pairs == "identical":
    np.testing.assert_array_equal(y2, ys)
  elif pairs == "arbitrary":  # the labels of a permutation of the rows
    np.testing.assert_array_equal(np.sort(y2), np.sort(ys))
    assert np.any(y2 != ys)
  else:
    assert np.all(y2 != ys) and set(y2) <= set(ys)


def test_one_train_step_on_resnet_tiny():
  method = _method({"probe": True})
  net = method.network()
  variables = net.init(jax.random.key(1), X)
  tx = optax.adam(1e-2)
  st = state.create(variables, tx, jax.random.key(2), extras={"method": {}})
  fn = jax.jit(
    functools.partial(
      step.train_step,
      method=method,
      network=net,
      tx=tx,
      views_fn=lambda rng, x: {"image": (x.astype(jnp.float32),)},
    )
  )
  batch = {"image": np.asarray(X), "id": Y1 + 100, "label": Y1}
  new, metrics = fn(st, batch)
  for key in ("loss", "pos_sim", "gate_activation", "gate_entropy", "probe_ce"):
    assert np.isfinite(float(metrics[key])), key
  assert 0 < float(metrics["gate_activation"]) < 8
  assert float(metrics["frac_with_pos"]) == 1.0  # P x K: every pair present
  # every trained part moved: encoder, projector, gate (rows of the batch's
  # classes only), probe
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       new.params, st.params)  # fmt: skip
  for part in ("encoder", "projector", "gate", "probe"):
    assert max(jax.tree.leaves(moved[part])) > 0, part
  table = lambda s: s.params["gate"]["label_embedding"]["embedding"]
  rows = np.abs(np.asarray(table(new) - table(st))).max(1)
  assert np.all(rows[[0, 3, 5, 8]] > 0) and np.all(rows[[1, 2, 4, 6, 7]] == 0)

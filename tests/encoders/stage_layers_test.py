"""WaveBlock, CBAM and the non-local block, and the ResNet's `after_stage`
hook that places them between stages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import encoders
from idlearn.encoders import stage_layers

RNG = np.random.default_rng(3)


def _wave(x, key, *, train=True):
  block = stage_layers.WaveBlock()
  return block.apply({}, x, train=train, rngs={"waveblock": key})


@pytest.mark.parametrize("h", [8, 16, 17, 24])
def test_wave_mask_is_one_band_of_round_03h_rows_at_1_else_15(h):
  x = jnp.ones((2, h, 3, 4))
  band = int(round(0.3 * h))
  starts = set()
  for seed in range(40):
    y = np.asarray(_wave(x, jax.random.PRNGKey(seed)))
    assert set(np.unique(y)) <= {1.0, 1.5}
    assert (y == y[:1, :, :1, :1]).all()  # one mask for batch, columns, chans
    ones = np.flatnonzero(y[0, :, 0, 0] == 1.0)
    assert len(ones) == band and (np.diff(ones) == 1).all()  # one band
    starts.add(int(ones[0]))
  assert starts <= set(range(h - band + 1)) and len(starts) > 1


def test_wave_is_the_identity_in_evaluation_and_needs_its_stream_in_training():
  x = jnp.asarray(RNG.normal(size=(2, 8, 4, 3)), jnp.float32)
  np.testing.assert_array_equal(stage_layers.WaveBlock().apply({}, x), x)
  with pytest.raises(ValueError, match="waveblock"):
    stage_layers.WaveBlock().apply({}, x, train=True)
  # a different key draws (eventually) a different band
  bands = {tuple(np.asarray(_wave(x, jax.random.PRNGKey(s))[0, :, 0, 0] / x[
    0, :, 0, 0])) for s in range(10)}  # fmt: skip
  assert len(bands) > 1


def _init(layer, x):
  variables = layer.init(jax.random.PRNGKey(0), x, train=False)
  out, _ = layer.apply(variables, x, train=True, mutable=["batch_stats"])
  return variables, out


def test_cbam_keeps_the_shape_and_is_a_residual_gate():
  x = jnp.asarray(RNG.normal(size=(2, 8, 4, 32)), jnp.float32)
  variables, y = _init(stage_layers.CBAM(), x)
  p = variables["params"]
  assert y.shape == x.shape
  assert p["mlp_0"]["kernel"].shape == (32, 2)  # reduction 16
  assert p["spatial"]["kernel"].shape == (7, 7, 2, 1)
  # x + x * gates with gates in (0, 1): between x and 2x elementwise
  ratio = np.asarray(y / x)
  assert (ratio > 1).all() and (ratio < 2).all()


def test_nonlocal_is_the_identity_at_init_and_not_after_its_bn_moves():
  x = jnp.asarray(RNG.normal(size=(2, 4, 3, 8)), jnp.float32)
  variables, y = _init(stage_layers.NonLocal(), x)
  p = variables["params"]
  assert p["theta"]["kernel"].shape == (1, 1, 8, 4)  # c / 2 channels
  np.testing.assert_array_equal(y, x)
  moved = jax.tree.map(lambda v: v, p)
  moved["W_1"]["scale"] = jnp.ones_like(p["W_1"]["scale"])
  y2, _ = stage_layers.NonLocal().apply(
    {**variables, "params": moved}, x, train=True, mutable=["batch_stats"]
  )
  assert y2.shape == x.shape and np.abs(np.asarray(y2 - x)).max() > 1e-2


def test_parse_rejects_unknown_and_repeated_names():
  assert stage_layers.parse(("", "cbam+wave"), 4) == [[], ["cbam", "wave"],
                                                      [], []]  # fmt: skip
  for bad in (("", "attention"), ("wave+wave",), ("",) * 5, "wave"):
    with pytest.raises(ValueError, match="after_stage"):
      stage_layers.parse(bad, 4)


@pytest.mark.parametrize(
  "after", [("", "cbam+wave", "cbam+wave", ""),
            ("", "wave+nonlocal", "wave+nonlocal", "")],
)  # fmt: skip
def test_resnet_puts_the_layers_after_stages_2_and_3(after):
  plain = encoders.get_encoder("resnet_tiny")
  model = encoders.get_encoder("resnet_tiny", after_stage=after)
  x = jnp.asarray(RNG.uniform(size=(2, 32, 16, 3)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  params = variables["params"]
  attention = after[1].replace("wave", "").strip("+")
  assert {f"stage2_{attention}", f"stage3_{attention}"} <= set(params)
  # the plain encoder's parameters are a subset, at the same paths
  base = plain.init(jax.random.PRNGKey(0), x, train=False)["params"]
  assert set(base) == set(params) - {f"stage2_{attention}",
                                     f"stage3_{attention}"}  # fmt: skip
  # evaluation: WaveBlock is the identity (no PRNG needed)
  emb, aux = model.apply(variables, x, train=False)
  assert emb.shape == (2, 32) and aux["stage2"].shape[-1] == 16
  # training: each key its own band, so the embeddings differ
  run = lambda k: model.apply(
    variables, x, train=True, mutable=["batch_stats"], rngs={"waveblock": k}
  )[0][0]
  outs = {tuple(np.asarray(run(jax.random.PRNGKey(s))[0, :3]).round(5))
          for s in range(6)}  # fmt: skip
  assert len(outs) > 1

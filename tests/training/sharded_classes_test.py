"""ArcFace with its class centres split over the mesh (Partial FC) in the
train loop: 8 devices train as 1 does, each holds 1/8 of the centres and of
their optimizer state, and checkpoints restore onto another device count."""

import jax
import numpy as np
import pytest

from idlearn import sharding
from idlearn.methods import margin
from idlearn.training import loop

CLASSES = 50  # the synthetic loader's identities


def _views(rng, images):
  del rng
  return {"image": (images.astype("float32") / 255.0,)}


def _config(tiny, steps, **method):
  c = tiny.config(steps, ckpt_steps=2)
  c.views = {"image": dict(count=1)}
  c.method = dict(
    name="arcface", neck_dim=8, scale=16.0, num_classes=CLASSES, **method
  )
  c.optim = dict(name="adamw", lr=0.01, weight_decay=0.0, warmup_steps=0)
  return c


def _parts(tiny):
  return {**tiny.parts(), "views_fn": _views}


def _mesh(n):
  return sharding.make_data_mesh(jax.devices()[:n])


def _train(tiny, workdir, steps, devices, **method):
  return loop.train(
    _config(tiny, steps, **method),
    workdir,
    mesh=_mesh(devices),
    **_parts(tiny),
  )


def test_class_rows_are_padded_independently_of_the_device_count():
  assert margin.class_rows(50, 1) == margin.class_rows(50, 8) == 256
  assert margin.class_rows(256, 8) == 256
  assert margin.class_rows(1_000_001, 64) == 1_000_192  # 3907 * 256


@pytest.mark.slow
def test_eight_devices_train_as_one_and_restore_onto_four(tiny, tmp_path):
  one = _train(tiny, str(tmp_path / "one"), 4, 1, shard_classes=True)
  eight = _train(tiny, str(tmp_path / "eight"), 4, 8, shard_classes=True)
  _train(tiny, str(tmp_path / "plain"), 4, 8)  # replicated centres
  for step in range(1, 5):
    a, b, c = (tiny.read_losses(tmp_path / w)[step] for w in (
      "one", "eight", "plain"))  # fmt: skip
    np.testing.assert_allclose(b, a, rtol=2e-5)
    np.testing.assert_allclose(c, a, rtol=2e-5)
  assert one["train/loss"] > 0 and eight["train/loss"] < one["train/loss"] + 1

  # the sharded state: centres and their Adam moments split in rows
  run, state, step = loop.restore(
    _config(tiny, 4, shard_classes=True),
    str(tmp_path / "eight"),
    mesh=_mesh(8),
    **_parts(tiny),
  )
  assert step == 4
  split = _leaves_named(state, "class_weights")
  assert len(split) == 3  # the parameter and Adam's two moments
  for x in split:
    assert x.shape == (256, 8)
    shard_bytes = {s.data.nbytes for s in x.addressable_shards}
    assert shard_bytes == {x.nbytes // 8}  # 1/8 of the rows per device
  ids = {id(x) for x in split}
  others = [x for x in jax.tree.leaves(state) if id(x) not in ids]
  assert others and all(x.is_fully_replicated for x in others)

  # the same checkpoint onto 4 devices: same values, 1/4 per device
  _, state4, _ = loop.restore(
    _config(tiny, 4, shard_classes=True),
    str(tmp_path / "eight"),
    mesh=_mesh(4),
    **_parts(tiny),
  )
  w8 = _leaves_named(state, "class_weights")[0]
  w4 = _leaves_named(state4, "class_weights")[0]
  np.testing.assert_array_equal(np.asarray(w4), np.asarray(w8))
  assert {s.data.shape for s in w4.addressable_shards} == {(64, 8)}
  # and trains on there
  out = _train(tiny, str(tmp_path / "eight"), 6, 4, shard_classes=True)
  assert np.isfinite(out["train/loss"])


def test_sample_rate_without_sharding_is_a_config_error(tiny, tmp_path):
  from idlearn.errors import ConfigError

  with pytest.raises(ConfigError, match="sample_rate=0.5 needs shard"):
    loop.build(_config(tiny, 2, sample_rate=0.5), _mesh(8), **_parts(tiny))


def _leaves_named(state, name):
  """Leaves of `state` under a key `name` (identity kept, in tree order)."""
  out = []

  def visit(path, x):
    if name in {getattr(k, "key", None) for k in path}:
      out.append(x)

  jax.tree_util.tree_map_with_path(visit, state)
  return out

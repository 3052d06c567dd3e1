"""partial_fc: the margin softmax with class centres split over devices.

References: the float64 NumPy margin softmax of margin_test.py, and the
unsharded `margin.arcface` / `margin.cosface` on 1 device.
"""

import functools
import os
import sys

import jax
import numpy as np
import pytest

from idlearn import losses, sharding

sys.path.insert(0, os.path.dirname(__file__))
from margin_test import ref_margin_softmax  # noqa: E402

RNG = np.random.default_rng(5)
B, D, C, ROWS = 16, 6, 37, 64  # 37 real classes padded to 64 rows
HYPER = {"arcface": (30.0, 0.5), "cosface": (30.0, 0.35)}


def _inputs(classes=C, rows=ROWS):
  emb = RNG.normal(size=(B, D)).astype(np.float32)
  w = RNG.normal(size=(rows, D)).astype(np.float32)
  # every row's label among the real classes, spread over the devices
  ids = RNG.integers(0, classes, B).astype(np.int32)
  return emb, w, ids


def _pfc(kind, mesh=None, sample_rate=1.0, classes=C):
  """value_and_grad in (emb, w) of partial_fc, sharded over `mesh`."""
  scale, m = HYPER[kind]
  kw = dict(kind=kind, scale=scale, margin=m, num_classes=classes)
  kw.update(sample_rate=sample_rate)

  def fn(emb, w, ids, rng, axis_name=None, **kw):
    return losses.partial_fc(emb, w, ids, rng=rng, axis_name=axis_name, **kw)

  if mesh is None:
    f = functools.partial(fn, **kw)
  else:
    f = sharding.shard_loss(fn, mesh, replicated_args=(3,), **kw)
  return jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_unsharded_equals_the_float64_reference_and_padding_is_ignored(kind):
  emb, w, ids = _inputs()
  (loss, aux), (_, dw) = _pfc(kind)(emb, w, ids, jax.random.PRNGKey(0))
  want = ref_margin_softmax(emb, w[:C], ids, *HYPER[kind], kind)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert not np.asarray(dw[C:]).any()  # padding rows: no gradient
  cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (
    w[:C] / np.linalg.norm(w[:C], axis=1, keepdims=True)
  ).T
  np.testing.assert_allclose(aux["top1"], np.mean(cos.argmax(1) == ids))


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_eight_devices_equal_one_device_loss_and_gradients(kind):
  emb, w, ids = _inputs()
  rng = jax.random.PRNGKey(0)
  mesh = sharding.make_data_mesh()
  assert mesh.shape[sharding.DATA_AXIS] == 8
  w_split = jax.device_put(w, sharding.batch_sharding(mesh))
  (loss8, aux8), (de8, dw8) = _pfc(kind, mesh)(emb, w_split, ids, rng)
  # the unsharded loss over the real classes is the reference
  scale, m = HYPER[kind]
  unsharded = jax.value_and_grad(
    lambda e, w: getattr(losses, kind)(e, w, ids, scale=scale, margin=m),
    (0, 1),
    has_aux=True,
  )
  (loss1, aux1), (de1, dw1) = unsharded(emb, w[:C])
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  np.testing.assert_allclose(aux8["top1"], aux1["top1"])
  np.testing.assert_allclose(aux8["target_cos"], aux1["target_cos"], 1e-5)
  np.testing.assert_allclose(de8, de1, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dw8[:C], dw1, rtol=1e-4, atol=1e-6)
  assert not np.asarray(dw8[C:]).any()
  # each device computed with its own 1/8 of the centres
  assert {s.data.shape for s in w_split.addressable_shards} == {(ROWS // 8, D)}


def test_sampling_keeps_every_positive_and_is_the_softmax_over_the_kept():
  """sample_rate 0.25 on 8 devices of 32 centres: 16 of each device's
  centres (the global batch size: every positive must fit) enter the
  softmax, every label's among them; the loss is the plain margin softmax
  over exactly the centres that received a gradient."""
  classes, rows = 230, 256
  emb, w, ids = _inputs(classes, rows)
  mesh = sharding.make_data_mesh()
  w_split = jax.device_put(w, sharding.batch_sharding(mesh))

  def kept_rows(key):
    (loss, _), (_, dw) = _pfc("arcface", mesh, 0.25, classes)(
      emb, w_split, ids, jax.random.PRNGKey(key)
    )
    return loss, np.flatnonzero(np.abs(np.asarray(dw)).sum(axis=1))

  loss, kept = kept_rows(3)
  per_device = np.bincount(kept // (rows // 8), minlength=8)
  # devices 0-6 hold real classes only; device 7 six real, 26 padding
  assert (per_device[:7] == 16).all(), per_device
  assert set(ids) <= set(kept)
  new_id = {c: i for i, c in enumerate(kept)}
  want = ref_margin_softmax(
    emb, w[kept], np.array([new_id[i] for i in ids]), *HYPER["arcface"],
    "arcface",
  )  # fmt: skip
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  # another key samples other negatives
  assert set(kept_rows(4)[1]) != set(kept)


def test_num_sampled_bounds():
  assert losses.partial_fc.__module__.endswith("partial_fc")
  from idlearn.losses.partial_fc import num_sampled

  assert num_sampled(100, 0.1) == 10
  assert num_sampled(100, 0.101) == 11
  assert num_sampled(100, 0.1, batch=32) == 32  # every positive fits
  assert num_sampled(3, 0.01) == 1
  assert num_sampled(8, 0.5, batch=16) == 8
  with pytest.raises(ValueError, match="sample_rate"):
    num_sampled(8, 0.0)

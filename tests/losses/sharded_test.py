"""Every axis_name loss: value, aux and gradients on 8 devices == 1 device.

The sharded call runs under idlearn.sharding.shard_loss (every
argument split by rows over the 8 fake CPU devices); the reference is the
same loss with axis_name=None on the concatenated batch.
"""

import functools

import chex
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from idlearn import sharding
from idlearn.losses import contrastive, margin, metric, redundancy

RNG = np.random.default_rng(4)
N, D = 16, 6  # 2 rows per device
# P x K = 4 x 4 ids, shuffled so that positives sit on other devices.
IDS = RNG.permutation(np.repeat(np.arange(4), 4)).astype(np.int32)


def _check(loss_fn, args, argnums, in_specs=None, **kw):
  """Asserts value, aux and d/d(args[argnums]) agree with the 1-device run.

  in_specs=None: every argument split by rows, through shard_loss.
  """
  mesh = sharding.make_data_mesh()
  assert mesh.shape[sharding.DATA_AXIS] == 8
  single = functools.partial(loss_fn, **kw)
  if in_specs is None:
    sharded_fn = sharding.shard_loss(loss_fn, mesh, **kw)
    in_specs = (P(sharding.DATA_AXIS),) * len(args)
  else:
    sharded_fn = jax.shard_map(
      functools.partial(loss_fn, axis_name=sharding.DATA_AXIS, **kw),
      mesh=mesh,
      in_specs=in_specs,
      out_specs=P(),
    )
  vg = lambda f: jax.jit(jax.value_and_grad(f, argnums, has_aux=True))
  (want, want_aux), want_grads = vg(single)(*args)
  placed = [
    jax.device_put(a, NamedSharding(mesh, s))
    for a, s in zip(args, in_specs, strict=True)
  ]
  (got, got_aux), got_grads = vg(sharded_fn)(*placed)
  chex.assert_trees_all_close((got, got_aux), (want, want_aux), rtol=1e-5)
  chex.assert_trees_all_close(got_grads, want_grads, rtol=1e-5, atol=1e-7)
  # The test must be able to fail: gradients are not all zero.
  assert max(float(np.abs(g).max()) for g in want_grads) > 1e-3


@pytest.mark.parametrize("name", ["info_nce", "dcl", "dclw", "barlow_twins"])
def test_two_view_losses(name):
  z1, z2 = RNG.normal(size=(2, N, D)).astype(np.float32)
  fn = getattr(contrastive, name, None) or redundancy.barlow_twins
  kw = {} if name == "barlow_twins" else {"temperature": 0.2}
  _check(fn, (z1, z2), (0, 1), **kw)


def test_decoupled_softmax_rows_local_keys_gathered():
  q = RNG.normal(size=(N, D)).astype(np.float32)
  k = RNG.normal(size=(3 * 8, D)).astype(np.float32)  # 3 keys per device
  positives = RNG.random((N, 3 * 8)) < 0.2
  positives[0] = False  # a query without positive on device 0
  _check(
    contrastive.decoupled_softmax,
    (q, k, positives),
    (0, 1),
    temperature=0.1,
  )


@pytest.mark.parametrize(
  "mining,squared",
  [("batch_hard", False), ("semi_hard", True), ("batch_all", False)],
)
def test_triplet_gathers_ids(mining, squared):
  emb = RNG.normal(size=(N, D)).astype(np.float32) * 0.3
  _check(
    metric.triplet,
    (emb, IDS),
    (0,),
    margin=0.5,
    mining=mining,
    squared=squared,
  )


@pytest.mark.parametrize("name", ["arcface", "cosface"])
def test_margin_losses_with_replicated_class_weights(name):
  emb = RNG.normal(size=(N, D)).astype(np.float32)
  w = RNG.normal(size=(5, D)).astype(np.float32)
  ids = RNG.integers(0, 5, N).astype(np.int32)
  # shard_loss splits every argument; the class weights stay replicated.
  specs = (P(sharding.DATA_AXIS), P(), P(sharding.DATA_AXIS))
  _check(getattr(margin, name), (emb, w, ids), (0, 1), specs, scale=16.0)

"""idlearn.sharding: the data mesh, batch placement, shard_loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from idlearn import sharding


def test_data_mesh_is_1d_auto_over_all_devices():
  mesh = sharding.make_data_mesh()
  assert mesh.axis_names == (sharding.DATA_AXIS,)
  assert mesh.shape[sharding.DATA_AXIS] == jax.device_count() == 8
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  sub = sharding.make_data_mesh(jax.devices()[:2])
  assert sub.shape[sharding.DATA_AXIS] == 2


def test_shard_batch_splits_rows_and_replicated_copies():
  mesh = sharding.make_data_mesh()
  batch = {"image": np.arange(16 * 3).reshape(16, 3), "id": np.arange(16)}
  placed = sharding.shard_batch(batch, mesh)
  assert placed["image"].sharding.spec == P(sharding.DATA_AXIS)
  shards = placed["id"].addressable_shards
  assert len(shards) == 8
  for s in shards:  # device i holds rows 2i, 2i+1
    start = s.index[0].start
    np.testing.assert_array_equal(s.data, np.arange(start, start + 2))
  np.testing.assert_array_equal(placed["image"], batch["image"])
  rep = jax.device_put(np.ones(3), sharding.replicated(mesh))
  assert all(s.data.shape == (3,) for s in rep.addressable_shards)


def test_shard_batch_rejects_indivisible_batch():
  mesh = sharding.make_data_mesh()
  with pytest.raises(ValueError, match=r"\['id'\].*12.*8 devices"):
    sharding.shard_batch({"id": np.zeros(12), "x": np.zeros(16)}, mesh)


def _sum_sq_over_global_mean(x, *, scale, axis_name=None):
  """A toy loss that needs the global batch: sum_i x_i^2 / mean(x) * scale."""
  mean = jnp.mean(x)
  total = jnp.sum(x * x)
  if axis_name is not None:
    mean = jax.lax.pmean(mean, axis_name)
    total = jax.lax.psum(total, axis_name)
  return scale * total / mean, {"mean": mean}


def test_shard_loss_binds_kwargs_and_matches_global_value_and_grad():
  mesh = sharding.make_data_mesh()
  x = np.linspace(1.0, 2.0, 16, dtype=np.float32)
  fn = sharding.shard_loss(_sum_sq_over_global_mean, mesh, scale=3.0)
  vg = jax.jit(jax.value_and_grad(fn, has_aux=True))
  (loss, aux), grad = vg(sharding.shard_batch(x, mesh))
  # d/dx_i [s * S / m] = s * (2 x_i / m - S / (m^2 n)), by hand.
  s, m, total = 3.0, x.mean(), np.sum(x**2)
  np.testing.assert_allclose(loss, s * total / m, rtol=1e-6)
  np.testing.assert_allclose(aux["mean"], m, rtol=1e-6)
  want = s * (2 * x / m - total / (m**2 * len(x)))
  np.testing.assert_allclose(grad, want, rtol=1e-5)

"""Data-parallel sharding helpers: the data axis, its mesh, sharded losses."""

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all) with the Auto data axis.

  `jax.make_mesh` defaults to Explicit axes in this JAX, which reject a
  replicated-state / sharded-batch step; Auto lets jit propagate shardings.
  """
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(
    np.asarray(devices),
    (DATA_AXIS,),
    axis_types=(jax.sharding.AxisType.Auto,),
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state)."""
  return NamedSharding(mesh, P())


def state_shardings(tree: Any, split: tuple[str, ...], mesh: Mesh) -> Any:
  """Per-leaf shardings of a train state: rows split over the data axis for
  every leaf under a key named in `split` (the parameter, its optimizer
  moments, its EMA copy), replicated otherwise.

  Raises:
    ValueError: a split leaf whose first dimension the devices do not
      divide.
  """
  split, n = frozenset(split), mesh.shape[DATA_AXIS]

  def pick(path, x):
    if not split or not split & {getattr(k, "key", None) for k in path}:
      return replicated(mesh)
    if not x.ndim or x.shape[0] % n:
      raise ValueError(
        f"{jax.tree_util.keystr(path)} {tuple(x.shape)} cannot be split "
        f"in rows over {n} devices"
      )
    return batch_sharding(mesh)

  return jax.tree_util.tree_map_with_path(pick, tree)


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """Places every array of `tree` on `mesh`, split along its first axis.

  Raises:
    ValueError: a leading dimension not divisible by the number of devices.
  """
  n = mesh.shape[DATA_AXIS]

  def put(path, x):
    if x.shape[0] % n:
      raise ValueError(
        f"batch field {jax.tree_util.keystr(path)} has leading dimension "
        f"{x.shape[0]}, not divisible by the {n} devices of the data mesh"
      )
    return jax.device_put(x, batch_sharding(mesh))

  return jax.tree_util.tree_map_with_path(put, tree)


def shard_loss(
  loss_fn: Callable[..., Any],
  mesh: Mesh,
  *,
  replicated_args: tuple[int, ...] = (),
  **kwargs,
) -> Callable:
  """Runs `loss_fn(*xs, axis_name=DATA_AXIS, **kwargs)` per device.

  Every positional argument is split along its first axis over the data axis
  (except those in `replicated_args`, which every device gets whole: class
  weights, a centre, a scalar mixing weight); the loss gathers what it needs
  across devices and returns replicated (global-batch) values, so
  `(loss, aux)` comes out unsharded and its gradient equals the
  single-device gradient on the concatenated batch.

  Args:
    loss_fn: an idlearn loss taking `axis_name`.
    mesh: a mesh with a `DATA_AXIS` axis (see `make_data_mesh`).
    replicated_args: positions of the arguments that are not batch-split.
    **kwargs: keyword-only hyper-parameters bound into the loss.
  Returns:
    A function of the same positional arguments, to call inside or outside
    `jax.jit`.
  """
  per_device = functools.partial(loss_fn, axis_name=DATA_AXIS, **kwargs)
  if not replicated_args:
    return jax.shard_map(
      per_device, mesh=mesh, in_specs=P(DATA_AXIS), out_specs=P()
    )

  def call(*xs):
    specs = tuple(
      P() if i in replicated_args else P(DATA_AXIS) for i in range(len(xs))
    )
    return jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P())(
      *xs
    )

  return call


def put_local_batch(tree: Any, mesh: Mesh) -> Any:
  """This process's batch slice -> global arrays split over the data axis.

  Single process: the same as `shard_batch`. Several processes: each passes
  its own rows (the loader reads only its shard) and the global batch is
  their concatenation in process order.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, x), tree
  )


def to_host(tree: Any) -> Any:
  """Replicated device arrays -> NumPy, also when not fully addressable."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

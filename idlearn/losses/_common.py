"""Helpers shared by the losses: normalisation, cross-device gathering."""

import jax
import jax.numpy as jnp

Aux = dict[str, jax.Array]

# Squared norms are clipped here before rsqrt: clipping the norm itself still
# gives NaN gradients at the zero vector.
_MIN_SQ_NORM = 1e-12


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """x / ||x|| along `axis`, float32, finite (value and gradient) at 0."""
  x = x.astype(jnp.float32)
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, _MIN_SQ_NORM))


def gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  """[b, ...] local rows -> [n*b, ...] rows of all devices (device order).

  Identity when `axis_name` is None. Gradients flow back to each device's own
  rows through the all_gather transpose (a reduce-scatter).
  """
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, tiled=True)


def row_offset(b: int, axis_name: str | None) -> jax.Array | int:
  """Index of this device's first row in the gathered [n*b] batch."""
  if axis_name is None:
    return 0
  return jax.lax.axis_index(axis_name) * b


def global_mean(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean of a per-device scalar over devices (identity when unsharded)."""
  if axis_name is None:
    return x
  return jax.lax.pmean(x, axis_name)


def global_size(b: int, axis_name: str | None) -> int:
  """Global batch size n*b for a local batch of b rows."""
  if axis_name is None:
    return b
  return b * jax.lax.axis_size(axis_name)


def check_embeddings(name: str, x: jax.Array) -> None:
  """Raises ValueError unless `x` is a [b, d] floating array with b >= 1."""
  if x.ndim != 2 or x.shape[0] < 1:
    raise ValueError(f"{name} must be [b, d] embeddings, got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")


def check_views(z1: jax.Array, z2: jax.Array, names=("z1", "z2")) -> None:
  """Raises ValueError unless the two views are [b, d] arrays of one shape."""
  check_embeddings(names[0], z1)
  check_embeddings(names[1], z2)
  if z1.shape != z2.shape:
    raise ValueError(
      f"{names[0]} and {names[1]} must have the same shape [b, d], got "
      f"{names[0]} {z1.shape} and {names[1]} {z2.shape}"
    )


def check_positive(name: str, value: float | jax.Array) -> None:
  """Raises ValueError if a concrete hyper-parameter is <= 0.

  Traced values (e.g. a scheduled temperature) cannot be checked at trace
  time and pass through.
  """
  if isinstance(value, jax.core.Tracer):
    return
  if not float(value) > 0:
    raise ValueError(f"{name} must be > 0, got {value}")


def is_concrete(x: jax.Array) -> bool:
  """True when `x` holds known values (not a tracer under jit/shard_map)."""
  return not isinstance(x, jax.core.Tracer)

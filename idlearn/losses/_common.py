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

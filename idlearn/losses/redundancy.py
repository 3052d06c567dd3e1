"""Redundancy reduction: the Barlow Twins objective."""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  check_positive,
  check_views,
  global_mean,
  is_concrete,
)


def _standardize(z: jax.Array, eps: float, axis_name: str | None):
  """[b, d] -> each column minus its global-batch mean, over its std.

  Biased variance over the global batch (as BatchNorm in training mode);
  local batches are equal, so the mean of per-device means is global.
  """
  mu = global_mean(jnp.mean(z, axis=0), axis_name)  # [d]
  var = global_mean(jnp.mean(jnp.square(z - mu), axis=0), axis_name)  # [d]
  return (z - mu) * jax.lax.rsqrt(var + eps)


def barlow_twins(
  z1: jax.Array,
  z2: jax.Array,
  *,
  lambda_offdiag: float = 5e-3,
  eps: float = 1e-5,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Barlow Twins loss (Zbontar et al., ICML 2021, arXiv:2103.03230).

  Each of the d dimensions is standardised over the global batch of N
  samples, zn = (z - mean) / sqrt(var + eps) (biased variance), then
    C = z1n^T z2n / N                                  # [d, d]
    loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2
  (not divided by N or d: the loss is already a batch average through C).

  Args:
    z1: [b, d] embeddings of view 1 (any float dtype; float32 inside).
    z2: [b, d] embeddings of view 2, z2[i] paired with z1[i].
    lambda_offdiag: weight of the redundancy (off-diagonal) term.
    eps: > 0, added to the variance (BatchNorm's default); keeps constant
      dimensions finite.
    axis_name: mapped axis the batch is split over (statistics and C are
      reduced over it), or None.
  Returns:
    (loss, aux), aux = {"on_diag": sum_i (1 - C_ii)^2, "off_diag":
    sum_{i != j} C_ij^2 (unweighted), "mean_diag": mean C_ii}.
  """
  check_views(z1, z2)
  check_positive("eps", eps)
  if is_concrete(lambda_offdiag) and lambda_offdiag < 0:
    raise ValueError(f"lambda_offdiag must be >= 0, got {lambda_offdiag}")
  z1n = _standardize(z1.astype(jnp.float32), eps, axis_name)
  z2n = _standardize(z2.astype(jnp.float32), eps, axis_name)
  c = global_mean(z1n.T @ z2n / z1.shape[0], axis_name)  # [d, d]
  diag = jnp.diagonal(c)
  on = jnp.sum(jnp.square(1.0 - diag))
  off = jnp.sum(jnp.where(jnp.eye(c.shape[0], dtype=bool), 0.0, c * c))
  aux = {"on_diag": on, "off_diag": off, "mean_diag": jnp.mean(diag)}
  return on + lambda_offdiag * off, jax.tree.map(jax.lax.stop_gradient, aux)

"""SIE and VICReg: variance-invariance-covariance objectives.

VICReg (Bardes, Ponce, LeCun, ICLR 2022) on two views' embeddings x, y
[n, d] of the global batch:

  inv  = mean_ij (x_ij - y_ij)^2
  std  = 1/2 mean_j relu(1 - sqrt(Var(x_j) + 1e-4)) + (same for y)
  cov  = (sum_{i != j} C(x)_ij^2 + sum_{i != j} C(y)_ij^2) / d
  loss = sim_weight * inv + std_weight * std + cov_weight * cov

with Var the unbiased (n - 1) variance over the global batch and C the
covariance matrix of the centred embeddings, X^T X / (n - 1).

SIE (Garrido, Najman, LeCun, "Self-supervised learning of Split Invariant
Equivariant representations", ICML 2023; official code facebookresearch/SIE
`src/models.py`, class `SIE`): the embeddings come in an invariant part
(x_inv, y_inv) and an equivariant part (x_eq, y_eq); a predictor maps x_eq
to `pred`, its guess of y_eq given the transformation between the views.

  inv   = mean (x_inv - y_inv)^2
  equi  = mean (pred - y_eq)^2
  std   = VICReg's std on X = [x_inv, x_eq] and Y = [y_inv, y_eq]
  pstd  = 1/2 mean_j relu(1 - sqrt(Var(pred_j) + 1e-4))
  cov   = VICReg's cov on X and Y (d = d_inv + d_eq)
  loss  = sim_weight * (inv + equi_weight * equi)
          + std_weight * (std + pstd) + cov_weight * cov

The regularisers act on the concatenated embeddings on purpose: the
covariance term then also decorrelates the invariant from the equivariant
dimensions (no information kept twice). Defaults are the official README
command: sim 10, std 10, cov 1, equi_factor 0.45 (argparse's default 4.5 is
not what the paper ran). Neither side of any term is stop-gradient'ed.

Across devices (`axis_name`) the means, variances and covariances are
global-batch statistics (pmean of per-device sums; the official code
all-gathers the embeddings with their gradient, which gives the same
values and gradients).
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  check_views,
  global_mean,
  global_size,
)

_VAR_EPS = 1e-4  # inside the sqrt of the variance hinge (official value)


def _centred(z: jax.Array, axis_name: str | None):
  """(z - its global-batch mean [b, d], n / (n - 1) with n the global
  batch size): the unbiased correction, as torch's `var` and the official
  `X^T X / (batch_size - 1)`."""
  n = global_size(z.shape[0], axis_name)
  if n < 2:
    raise ValueError(f"the variance needs a global batch of >= 2 rows, got {n}")
  return z - global_mean(jnp.mean(z, axis=0), axis_name), n / (n - 1)


def _covariance(z: jax.Array, axis_name: str | None) -> jax.Array:
  """Unbiased covariance [d, d] of z [b, d] over the global batch."""
  zc, unbias = _centred(z, axis_name)
  # Mean over devices of the local X^T X / b = the global X^T X / n.
  return global_mean(zc.T @ zc / z.shape[0], axis_name) * unbias


def _variance(z: jax.Array, axis_name: str | None) -> jax.Array:
  """Unbiased variance [d] of z [b, d] over the global batch."""
  zc, unbias = _centred(z, axis_name)
  return global_mean(jnp.mean(jnp.square(zc), axis=0), axis_name) * unbias


def _std_hinge(var: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean_j relu(1 - sqrt(var_j + eps)), mean_j std_j) of variances [d]."""
  std = jnp.sqrt(var + _VAR_EPS)  # [d]
  return jnp.mean(jax.nn.relu(1.0 - std)), jnp.mean(std)


def _off_diagonal_sq(cov: jax.Array) -> jax.Array:
  """sum_{i != j} cov_ij^2 / d."""
  d = cov.shape[0]
  off = jnp.where(jnp.eye(d, dtype=bool), 0.0, cov)  # no cancellation
  return jnp.sum(jnp.square(off)) / d


def _regularizers(x: jax.Array, y: jax.Array, axis_name: str | None):
  """VICReg's (std, cov, mean std) of two [b, d] embeddings."""
  cov_x, cov_y = _covariance(x, axis_name), _covariance(y, axis_name)
  hinge_x, std_x = _std_hinge(jnp.diagonal(cov_x))
  hinge_y, std_y = _std_hinge(jnp.diagonal(cov_y))
  std = (hinge_x + hinge_y) / 2
  cov = _off_diagonal_sq(cov_x) + _off_diagonal_sq(cov_y)
  return std, cov, (std_x + std_y) / 2


def _mse(a: jax.Array, b: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean of (a - b)^2 over the global batch and the dimensions."""
  return global_mean(jnp.mean(jnp.square(a - b)), axis_name)


def _check_weights(**weights: float) -> None:
  for name, value in weights.items():
    if not isinstance(value, jax.core.Tracer) and not float(value) >= 0:
      raise ValueError(f"{name} must be >= 0, got {value}")


def vicreg(
  x: jax.Array,
  y: jax.Array,
  *,
  sim_weight: float = 10.0,
  std_weight: float = 10.0,
  cov_weight: float = 1.0,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """VICReg on two views (SIE's invariant-only baseline; see the module).

  Args:
    x, y: [b, d] embeddings of the two views (any float dtype; computed in
      float32). The global batch must hold at least 2 rows.
    sim_weight, std_weight, cov_weight: the terms' weights (SIE's official
      10 / 10 / 1; VICReg's paper uses 25 / 25 / 1).
    axis_name: mapped axis the batch is split over (statistics are global).
  Returns:
    (loss float32 [], {"inv", "std", "cov", "emb_std"}): the unweighted
    terms and the mean standard deviation of the embedding dimensions.
  """
  check_views(x, y, ("x", "y"))
  _check_weights(
    sim_weight=sim_weight, std_weight=std_weight, cov_weight=cov_weight
  )
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  inv = _mse(x, y, axis_name)
  std, cov, emb_std = _regularizers(x, y, axis_name)
  loss = sim_weight * inv + std_weight * std + cov_weight * cov
  return loss, {"inv": inv, "std": std, "cov": cov, "emb_std": emb_std}


def sie(
  x_inv: jax.Array,
  y_inv: jax.Array,
  x_eq: jax.Array,
  y_eq: jax.Array,
  pred: jax.Array,
  *,
  sim_weight: float = 10.0,
  std_weight: float = 10.0,
  cov_weight: float = 1.0,
  equi_weight: float = 0.45,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """SIE's objective (see the module docstring for the formula).

  Args:
    x_inv, y_inv: [b, d_inv] invariant embeddings of views 1 and 2.
    x_eq, y_eq: [b, d_eq] equivariant embeddings of views 1 and 2.
    pred: [b, d_eq] the predictor's image of x_eq under the transformation
      from view 1 to view 2 (its target is y_eq).
    sim_weight, std_weight, cov_weight: the VICReg weights (10 / 10 / 1).
    equi_weight: beta, the equivariance term's weight relative to
      sim_weight (official `--equi-factor 0.45`).
    axis_name: mapped axis the batch is split over (statistics are global).
  Returns:
    (loss float32 [], {"inv", "equi", "std", "pred_std", "cov", "emb_std",
    "pred_emb_std"}): the unweighted terms and the mean standard deviations
    of the concatenated embeddings and of the prediction.
  """
  check_views(x_inv, y_inv, ("x_inv", "y_inv"))
  check_views(x_eq, y_eq, ("x_eq", "y_eq"))
  check_views(x_eq, pred, ("x_eq", "pred"))
  if x_inv.shape[0] != x_eq.shape[0]:
    raise ValueError(
      f"x_inv and x_eq must hold the same rows, got {x_inv.shape} and "
      f"{x_eq.shape}"
    )
  _check_weights(
    sim_weight=sim_weight,
    std_weight=std_weight,
    cov_weight=cov_weight,
    equi_weight=equi_weight,
  )
  f32 = lambda a: a.astype(jnp.float32)
  x_inv, y_inv, x_eq, y_eq, pred = map(f32, (x_inv, y_inv, x_eq, y_eq, pred))
  inv = _mse(x_inv, y_inv, axis_name)
  equi = _mse(pred, y_eq, axis_name)
  x = jnp.concatenate([x_inv, x_eq], axis=1)  # [b, d_inv + d_eq]
  y = jnp.concatenate([y_inv, y_eq], axis=1)
  std, cov, emb_std = _regularizers(x, y, axis_name)
  pred_hinge, pred_std = _std_hinge(_variance(pred, axis_name))
  pred_hinge = pred_hinge / 2  # official: one view's half of the std term
  loss = (
    sim_weight * (inv + equi_weight * equi)
    + std_weight * (std + pred_hinge)
    + cov_weight * cov
  )
  aux = {
    "inv": inv,
    "equi": equi,
    "std": std,
    "pred_std": pred_hinge,
    "cov": cov,
    "emb_std": emb_std,
    "pred_emb_std": pred_std,
  }
  return loss, aux

"""Mixed Barlow Twins: Barlow Twins plus the mixed-sample regulariser."""

import jax
import jax.numpy as jnp

from idlearn import losses
from idlearn.training import sharding
from idlearn.training.objectives.base import Objective, need_views, pick

FIELDS = {
  "mixed_barlow_twins": {
    "on": "proj",
    "lambda_offdiag": 5e-3,
    "mix_alpha": 1.0,  # lambda ~ Beta(alpha, alpha), one per batch
    "mix_scale": 5.0,  # the regulariser's weight (mix-bt's mixup_loss_scale)
  }
}


def mix_views(rng: jax.Array, views, batch, *, alpha: float):
  """Appends the mixed view lam * v0 + (1 - lam) * v1[perm] (mix-bt).

  Args:
    rng: PRNG key.
    views: the step's views; views[0], views[1] float32 [b, h, w, 3] of the
      global batch (mixing is linear, so mixing normalised views equals
      normalising mixed pixels).
    batch: the batch dict; gets "mix_perm" int32 [b] (global row of view 1
      mixed into each row) and "mix_lambda" float32 [].
    alpha: Beta parameter of lam.
  Returns:
    (views + (mixed,), batch).
  """
  k_lam, k_perm = jax.random.split(rng)
  b = views[0].shape[0]
  lam = jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32)
  perm = jax.random.permutation(k_perm, b).astype(jnp.int32)
  mixed = lam * views[0] + (1.0 - lam) * jnp.take(views[1], perm, axis=0)
  return (*views, mixed), {**batch, "mix_perm": perm, "mix_lambda": lam}


def make_mixed_barlow_twins(cfg: dict, mesh) -> Objective:
  """barlow_twins(z1, z2) + mixed_barlow_twins_regularizer on the mixed
  view (Bandara et al., 2023); views 0, 1 plus the appended mixed view."""
  bt = sharding.shard_loss(
    losses.barlow_twins, mesh, lambda_offdiag=cfg["lambda_offdiag"]
  )

  def regularizer(z1, z2, zm, perm, lam, *, axis_name=None):
    return losses.mixed_barlow_twins_regularizer(
      z1,
      z2,
      zm,
      perm,
      mix_lambda=lam,
      lambda_offdiag=cfg["lambda_offdiag"],
      scale=cfg["mix_scale"],
      axis_name=axis_name,
    )

  reg = sharding.shard_loss(regularizer, mesh, replicated_args=(4,))

  def prepare(rng, views, batch):
    need_views("mixed_barlow_twins", views, 2)
    return mix_views(rng, views[:2], batch, alpha=cfg["mix_alpha"])

  def loss(outs, batch, ctx):
    need_views("mixed_barlow_twins", outs, 3)
    z1, z2, zm = (pick(outs, v, cfg["on"]) for v in range(3))
    base, aux = bt(z1, z2)
    r, r_aux = reg(z1, z2, zm, batch["mix_perm"], batch["mix_lambda"])
    aux = {**aux, **r_aux, "barlow_twins": base, "mix_reg": r}
    return base + r, aux

  return Objective(loss, prepare=prepare)


BUILDERS = {"mixed_barlow_twins": make_mixed_barlow_twins}

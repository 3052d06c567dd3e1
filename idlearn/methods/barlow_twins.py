"""Barlow Twins and Mixed Barlow Twins.

Barlow Twins (Zbontar et al., ICML 2021): the cross-correlation of the two
views' standardised projections driven to the identity
(`losses.barlow_twins`). Mixed Barlow Twins (Bandara et al., 2023, the
official mix-bt code): a third view mixes view 1 with a permutation of
view 2, `lam * v1 + (1 - lam) * v2[perm]` (lam ~ Beta(alpha, alpha), one
per batch), and `losses.mixed_barlow_twins_regularizer` asks its
cross-correlations with the two views to be the same mixture of theirs.
Views: role "global" (2); the mixed view is made here ("mixed").
"""

import jax
import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.methods.contrastive import (
  PROJECTION_FIELDS,
  ProjectionMethod,
  projected,
)


class BarlowTwins(ProjectionMethod):
  NAMES = ("barlow_twins",)
  VIEWS = {"global": 2}
  FIELDS = {"lambda_offdiag": 5e-3, **PROJECTION_FIELDS}

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    self._bt = sharding.shard_loss(
      losses.barlow_twins, setup.mesh, lambda_offdiag=cfg["lambda_offdiag"]
    )

  def loss(self, net, views, batch, ctx):
    outs = net.views(views["global"][:2])
    value, aux = self._bt(projected(outs[0]), projected(outs[1]))
    if self.num_cameras:
      adv, adv_aux = self.adversary(outs, batch["cam"])
      value, aux = value + adv, {**aux, **adv_aux}
    return value, aux, ctx.extras


def mix_views(rng: jax.Array, v1: jax.Array, v2: jax.Array, *, alpha: float):
  """The mixed view lam * v1 + (1 - lam) * v2[perm] (mix-bt).

  Mixing is linear, so mixing normalised views equals normalising mixed
  pixels.

  Args:
    rng: PRNG key.
    v1, v2: float32 [b, h, w, 3] views of the global batch.
    alpha: Beta parameter of lam.
  Returns:
    (mixed [b, h, w, 3], perm int32 [b] (global row of v2 mixed into each
    row), lam float32 []).
  """
  k_lam, k_perm = jax.random.split(rng)
  lam = jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32)
  perm = jax.random.permutation(k_perm, v1.shape[0]).astype(jnp.int32)
  mixed = lam * v1 + (1.0 - lam) * jnp.take(v2, perm, axis=0)
  return mixed, perm, lam


class MixedBarlowTwins(BarlowTwins):
  NAMES = ("mixed_barlow_twins",)
  FIELDS = {
    **BarlowTwins.FIELDS,
    "mix_alpha": 1.0,  # lam ~ Beta(alpha, alpha), one per batch
    "mix_scale": 5.0,  # the regulariser's weight (mix-bt's mixup_loss_scale)
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)

    def regularizer(z1, z2, zm, perm, lam, *, axis_name=None):
      return losses.mixed_barlow_twins_regularizer(
        z1, z2, zm, perm, mix_lambda=lam,
        lambda_offdiag=cfg["lambda_offdiag"], scale=cfg["mix_scale"],
        axis_name=axis_name,
      )  # fmt: skip

    self._reg = sharding.shard_loss(
      regularizer, setup.mesh, replicated_args=(4,)
    )

  def prepare(self, rng, views, batch):
    v1, v2 = views["global"][:2]
    mixed, perm, lam = mix_views(rng, v1, v2, alpha=self.cfg["mix_alpha"])
    views = {**views, "mixed": (mixed,)}
    return views, {**batch, "mix_perm": perm, "mix_lambda": lam}

  def loss(self, net, views, batch, ctx):
    outs = net.views([*views["global"][:2], views["mixed"][0]])
    z1, z2, zm = (projected(o) for o in outs)
    bt, aux = self._bt(z1, z2)
    r, r_aux = self._reg(z1, z2, zm, batch["mix_perm"], batch["mix_lambda"])
    value, aux = bt + r, {**aux, **r_aux, "barlow_twins": bt, "mix_reg": r}
    if self.num_cameras:
      adv, adv_aux = self.adversary(outs[:2], batch["cam"])
      value, aux = value + adv, {**aux, **adv_aux}
    return value, aux, ctx.extras


METHODS = (BarlowTwins, MixedBarlowTwins)

"""Decoupled Mixup on the supervised re-ID recipe.

Liu, Li et al., "Harnessing Hard Mixed Samples with Decoupled Regularizer"
(NeurIPS 2023), official code Westlake-AI/openmixup (`MixUpClassification`
with mixup, `ClsMixupHead`, `soft_mix_cross_entropy`).

One step, on P x K batches (view role "image"):
- clean view x: the "supervised" recipe unchanged (batch-hard triplet on
  the pooled embedding + label-smoothed identity CE on the BNNeck);
- mixed view (made in `prepare`, role "mixed"): lam * x + (1 - lam) *
  x[perm], lam ~ Beta(alpha, alpha) once per batch and perm a permutation
  of the global batch (openmixup's mixup); the classifier's logits on it
  train with `losses.decoupled_mixup` (mixup CE + eta * the decoupled
  regulariser), weighted by `mix_weight`.

eta = 0 is plain mixup; alpha = 0 makes no mixed view and is exactly the
"supervised" method (the baseline arm at the same budget).

Choices (not in the paper, which trains classifiers without metric
losses): a mixed image has no single identity, so the triplet stays on
the clean view; the clean view keeps its CE (set ce_weight=0 for
openmixup's classifier trained on mixed images only). The mixed CE has
no label smoothing (openmixup warns against combining the two). The
mixed view is a second forward pass: BatchNorm normalises it over its own
batch, and a step costs about twice a "supervised" one.
"""

import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.losses.mixing import ETA_MODES
from idlearn.methods import base, supervised
from idlearn.methods.barlow_twins import mix_views


class DecoupledMixup(supervised.Supervised):
  """Supervised (clean view) + decoupled mixup CE (mixed view)."""

  NAMES = ("decoupled_mixup",)
  FIELDS = {
    **supervised.Supervised.FIELDS,
    "alpha": 1.0,  # lam ~ Beta(alpha, alpha), one per batch; 0: no mixing
    "eta": 0.1,  # decoupled regulariser weight; 0: plain mixup CE
    "eta_mode": "both",  # both | less | more (openmixup eta_weight.mode)
    "lam_power": 1.0,  # eta_i = eta * lam_i ** p (openmixup lam_idx)
    "mix_weight": 1.0,  # weight of the mixed view's loss
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    for key in ("alpha", "eta", "lam_power", "mix_weight"):
      if cfg[key] < 0:
        raise base.field_error(name, f"{key}={cfg[key]}: expected >= 0")
    if cfg["eta_mode"] not in ETA_MODES:
      raise base.field_error(
        name, f"eta_mode={cfg['eta_mode']!r}: one of {ETA_MODES}"
      )
    self.mixing = cfg["alpha"] > 0
    if self.mixing and not self.num_classes:
      raise base.field_error(
        name, f"loss={cfg['loss']!r} has no classifier for the mixed view: "
        "use triplet_ce or ce (or alpha=0)",
      )  # fmt: skip
    self._dm = sharding.shard_loss(
      losses.decoupled_mixup,
      setup.mesh,
      eta=cfg["eta"],
      eta_mode=cfg["eta_mode"],
      lam_power=cfg["lam_power"],
    )

  def prepare(self, rng, views, batch):
    """Adds the mixed view and its composition ("mix_perm" int32 [b],
    "mix_label_b" [b] the partner's class, "mix_lambda" float32 [b])."""
    if not self.mixing:
      return views, batch
    x = base.first(views, "image")  # [b, h, w, 3], the global batch
    mixed, perm, lam = mix_views(rng, x, x, alpha=self.cfg["alpha"])
    labels = base.labels_of(batch)
    batch = {
      **batch,
      "mix_perm": perm,
      "mix_label_b": jnp.take(labels, perm, axis=0),
      "mix_lambda": jnp.full(labels.shape, lam, jnp.float32),
    }
    return {**views, "mixed": (mixed,)}, batch

  def loss(self, net, views, batch, ctx):
    out = net(base.first(views, "image"))
    value, aux = self.terms(out, batch)
    if not self.mixing:
      return value, aux, ctx.extras
    logits = net(base.first(views, "mixed"))["logits"]  # [b, C]
    dm, dm_aux = self._dm(
      logits, base.labels_of(batch), batch["mix_label_b"], batch["mix_lambda"]
    )
    value = value + self.cfg["mix_weight"] * dm
    aux = {
      **aux,
      "dm": dm,
      "mixup_ce": dm_aux["mixup_ce"],
      "decoupled": dm_aux["decoupled"],
      "mix_top1": dm_aux["top1"],
    }
    return value, aux, ctx.extras


METHODS = (DecoupledMixup,)

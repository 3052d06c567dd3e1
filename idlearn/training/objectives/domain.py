"""DomainMix: labelled source identities + pseudo identities of an unlabelled
target domain, with the adversarial domain-balance loss.

Wang et al., "DomainMix", BMVC 2021. Batches hold source rows (domain 0,
their labels) and target rows (domain 1, the reliable pseudo identities of
`idlearn.training.relabel`, refreshed every few epochs). Terms:

  ce_src  label-smoothed identity CE of source rows (BNNeck classifier);
  ce_tgt  CE of target rows over the pseudo identities' centroids
          (cosine / memory_temp; the centroids come from the last
          re-clustering and follow the batch features with momentum);
  triplet batch-hard over all rows (source and pseudo ids kept disjoint);
  disc    the domain discriminator's CE on stop-gradient features
          (`losses.domain_classification`: trains the discriminator only);
  bal     `losses.domain_balance` of the discriminator on the features,
          with the discriminator's parameters frozen (trains the encoder
          to make the domains indistinguishable).

Assumption: DomainMix re-initialises a parametric classifier for the new
pseudo identities at every re-clustering; here they are classified by their
centroid memory instead (fixed shapes, no optimizer-state surgery).
"""

import jax
import jax.numpy as jnp
import optax

from idlearn import losses
from idlearn.losses._common import l2_normalize
from idlearn.training import sharding
from idlearn.training.objectives.base import Objective, pick

FIELDS = {
  "domainmix": {
    "margin": 0.3,
    "label_smoothing": 0.1,
    "triplet_weight": 1.0,
    "ce_weight": 1.0,  # source and target CE
    "disc_weight": 1.0,
    "balance_weight": 1.0,
    "memory_temp": 0.05,
    "memory_momentum": 0.2,
  }
}


def _masked_mean(x, mask):
  mask = mask.astype(jnp.float32)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def centroid_logits(feat, centroids, num_clusters, temp):
  """Cosine similarity to each active centroid / temp: [b, C_max]."""
  logits = l2_normalize(feat) @ l2_normalize(centroids).T / temp
  active = jnp.arange(centroids.shape[0]) < num_clusters
  return jnp.where(active[None, :], logits, -1e9)


def make_domainmix(cfg: dict, mesh) -> Objective:
  triplet = sharding.shard_loss(
    losses.triplet, mesh, margin=cfg["margin"], mining="batch_hard"
  )

  def loss(outs, batch, ctx):
    ex = ctx.extras
    domain = batch["domain"]
    src, tgt = domain == 0, domain == 1
    label = batch["label"]
    # Source CE over the source classes.
    logits = pick(outs, 0, "logits")
    c = logits.shape[-1]
    onehot = optax.smooth_labels(
      jax.nn.one_hot(jnp.where(src, label, 0), c), cfg["label_smoothing"]
    )
    ce_src = _masked_mean(optax.softmax_cross_entropy(logits, onehot), src)
    # Target CE over the pseudo identities' centroids.
    t_logits = centroid_logits(
      pick(outs, 0, "feat"),
      ex["centroids"],
      ex["num_clusters"],
      cfg["memory_temp"],
    )
    t_label = jnp.where(tgt, label, 0)
    ce_tgt = _masked_mean(
      optax.softmax_cross_entropy_with_integer_labels(t_logits, t_label), tgt
    )
    tri, tri_aux = triplet(pick(outs, 0, "emb"), batch["id"])
    disc, disc_aux = losses.domain_classification(
      pick(outs, 0, "domain_logits"), domain
    )
    bal, bal_aux = losses.domain_balance(pick(outs, 0, "domain_logits_adv"))
    total = (
      cfg["ce_weight"] * (ce_src + ce_tgt)
      + cfg["triplet_weight"] * tri
      + cfg["disc_weight"] * disc
      + cfg["balance_weight"] * bal
    )
    aux = {
      "ce_src": ce_src,
      "ce_tgt": ce_tgt,
      "triplet": tri,
      "disc": disc,
      "balance": bal,
      "disc_acc": disc_aux["accuracy"],
      "domain_entropy": bal_aux["domain_entropy"],
      "frac_active": tri_aux.get("frac_active", jnp.float32(0)),
      "num_clusters": ex["num_clusters"].astype(jnp.float32),
    }
    return total, aux

  def update_extras(extras, outs, teacher, batch):
    """Momentum update of the centroids of the batch's pseudo identities."""
    feat = l2_normalize(jax.lax.stop_gradient(outs[0]["feat"]))
    tgt = batch["domain"] == 1
    label = jnp.where(tgt, batch["label"], 0)
    c = extras["centroids"]
    onehot = jax.nn.one_hot(label, c.shape[0]) * tgt[:, None]  # [b, C]
    count = onehot.sum(0)  # [C]
    mean = (onehot.T @ feat) / jnp.maximum(count, 1.0)[:, None]
    m = cfg["memory_momentum"]
    moved = l2_normalize(m * c + (1.0 - m) * mean)
    c = jnp.where((count > 0)[:, None], moved, c)
    return {**extras, "centroids": c}

  return Objective(loss, update_extras=update_extras)


BUILDERS = {"domainmix": make_domainmix}

"""Supervised identity objectives: triplet, identity CE, ArcFace / CosFace.

The labels come from the batch: "id" (any integers; triplet positives share
it) and "label" (the loader's contiguous class index 0..C-1 of "id", which
classifiers index with).
"""

import functools

import jax
import jax.numpy as jnp
import optax

from idlearn import losses
from idlearn.losses._common import l2_normalize
from idlearn.training import sharding
from idlearn.training.objectives.base import Objective, pick

_TRIPLET = {
  "margin": 0.3,
  "mining": "batch_hard",
  "squared": False,
  "normalize": False,  # L2-normalise first (FaceNet)
}
# Supervised re-ID (Luo et al. 2019, "Bag of Tricks"): triplet on the
# pre-BNNeck embedding + label-smoothed identity CE on the post-BNNeck logits.
_TRIPLET_CE = {
  **_TRIPLET,
  "triplet_weight": 1.0,
  "ce_weight": 1.0,
  "label_smoothing": 0.1,
}
_MARGIN = {"scale": 30.0}
FIELDS = {
  "triplet": {"on": "emb", **_TRIPLET},
  "triplet_ce": {"on": "emb", **_TRIPLET_CE},
  "ce": {"label_smoothing": 0.1},
  "arcface": {"on": "proj", "margin": 0.5, **_MARGIN},
  "cosface": {"on": "proj", "margin": 0.35, **_MARGIN},
}


def identity_ce(
  logits: jax.Array, labels: jax.Array, *, label_smoothing: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Label-smoothed softmax cross-entropy; logits [b, C], labels [b]."""
  logits = logits.astype(jnp.float32)
  c = logits.shape[-1]
  target = optax.smooth_labels(jax.nn.one_hot(labels, c), label_smoothing)
  loss = optax.softmax_cross_entropy(logits, target).mean()
  acc = (logits.argmax(-1) == labels).mean()
  return loss, {"ce": loss, "id_acc": acc}


def labels_of(batch) -> jax.Array:
  """The contiguous class index of each row ("label", else "id")."""
  return batch.get("label", batch["id"])


def make_triplet_ce(name: str, cfg: dict, mesh) -> Objective:
  """triplet, ce or triplet_ce (weighted sum) on view 0."""
  kw = {k: cfg[k] for k in ("margin", "mining", "squared")}
  triplet = None
  if name != "ce":
    triplet = sharding.shard_loss(losses.triplet, mesh, **kw)

  def loss(outs, batch, ctx):
    aux, total = {}, 0.0
    if triplet is not None:
      emb = pick(outs, 0, cfg["on"])
      if cfg["normalize"]:
        emb = l2_normalize(emb)
      t, t_aux = triplet(emb, batch["id"])
      aux.update({"triplet": t, **t_aux})
      total = total + cfg.get("triplet_weight", 1.0) * t
    if name != "triplet":
      c, c_aux = identity_ce(
        pick(outs, 0, "logits"),
        labels_of(batch),
        label_smoothing=cfg["label_smoothing"],
      )
      aux.update(c_aux)
      total = total + cfg.get("ce_weight", 1.0) * c
    return total, aux

  return Objective(loss)


def make_margin(name: str, cfg: dict, mesh) -> Objective:
  """ArcFace / CosFace on view 0 with the model's "class_weights" (a
  `head="margin"` model); the weights are replicated, rows split."""
  fn = functools.partial(
    getattr(losses, name), scale=cfg["scale"], margin=cfg["margin"]
  )
  margin_loss = sharding.shard_loss(fn, mesh, replicated_args=(1,))

  def loss(outs, batch, ctx):
    weights = pick(outs, 0, "class_weights")
    return margin_loss(pick(outs, 0, cfg["on"]), weights, labels_of(batch))

  return Objective(loss)


BUILDERS = {
  "triplet": functools.partial(make_triplet_ce, "triplet"),
  "triplet_ce": functools.partial(make_triplet_ce, "triplet_ce"),
  "ce": functools.partial(make_triplet_ce, "ce"),
  "arcface": functools.partial(make_margin, "arcface"),
  "cosface": functools.partial(make_margin, "cosface"),
}

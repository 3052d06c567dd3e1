"""config.loss -> objective(outs, batch, teacher) -> (loss, aux).

An objective picks model outputs (one dict per view, see `model.IdModel`),
calls `idlearn.losses` inside `shard_map` over the data mesh (so in-batch
negatives and positives come from the whole global batch), and adds up the
terms. Methods differ here and in the config, never in the train loop.
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from idlearn import losses
from idlearn.training import fields, sharding

Outs = Sequence[Mapping[str, jax.Array]]

# Two-view objectives: loss(z1, z2) on `on` of views 0 and 1.
_PAIR = {
  "info_nce": {"temperature": 0.1},
  "dcl": {"temperature": 0.1},
  "dclw": {"temperature": 0.1, "sigma": 0.5},
  "barlow_twins": {"lambda_offdiag": 5e-3},
}
_TRIPLET = {"margin": 0.3, "mining": "batch_hard", "squared": False}
# Supervised re-ID (Luo et al. 2019, "Bag of Tricks"): triplet on the
# pre-BNNeck embedding + label-smoothed identity CE on the post-BNNeck logits.
_TRIPLET_CE = {
  **_TRIPLET,
  "triplet_weight": 1.0,
  "ce_weight": 1.0,
  "label_smoothing": 0.1,
}
FIELDS = {
  **{k: {"name": k, "on": "proj", **v} for k, v in _PAIR.items()},
  "triplet": {"name": "triplet", "on": "emb", **_TRIPLET},
  "triplet_ce": {"name": "triplet_ce", "on": "emb", **_TRIPLET_CE},
  "ce": {"name": "ce", "label_smoothing": 0.1},
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


def _pick(outs: Outs, view: int, key: str) -> jax.Array:
  if key not in outs[view]:
    raise ValueError(
      f"config.loss.on = {key!r} but the model outputs only "
      f"{sorted(outs[view])}"
    )
  return outs[view][key]


def make_objective(
  config: Mapping[str, Any],
  mesh: Mesh,
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
  """Builds the objective named by `config.loss.name`.

  Args:
    config: the `config.loss` group: "name" plus that loss's fields (see
      `FIELDS`; unknown fields raise ValueError listing the valid ones).
    mesh: the data mesh; cross-device losses run under `shard_map` on it.
  Returns:
    objective(outs, batch, teacher=None) -> (loss, aux), aux a flat dict of
    scalars.
  """
  name = fields.choice(
    (config or {}).get("name", ""), FIELDS, "config.loss.name"
  )
  cfg = fields.resolve(config, FIELDS[name], "config.loss")
  shard = functools.partial(sharding.shard_loss, mesh=mesh)

  if name in _PAIR:
    kw = {k: cfg[k] for k in _PAIR[name]}
    pair_loss = shard(getattr(losses, name), **kw)

    def objective(outs, batch, teacher=None):
      if len(outs) < 2:
        raise ValueError(f"loss {name!r} needs 2 views, got {len(outs)}")
      return pair_loss(_pick(outs, 0, cfg["on"]), _pick(outs, 1, cfg["on"]))

    return objective

  kw = {k: cfg[k] for k in _TRIPLET}
  triplet = shard(losses.triplet, **kw) if name != "ce" else None

  def objective(outs, batch, teacher=None):
    aux, total = {}, 0.0
    # "label": the loader's contiguous class index of "id" (0..C-1).
    labels = batch.get("label", batch["id"])
    if triplet is not None:
      t, t_aux = triplet(_pick(outs, 0, cfg["on"]), batch["id"])
      aux.update({"triplet": t, **t_aux})
      total = total + cfg.get("triplet_weight", 1.0) * t
    if name != "triplet":
      c, c_aux = identity_ce(
        _pick(outs, 0, "logits"),
        labels,
        label_smoothing=cfg["label_smoothing"],
      )
      aux.update(c_aux)
      total = total + cfg.get("ce_weight", 1.0) * c
    return total, aux

  return objective

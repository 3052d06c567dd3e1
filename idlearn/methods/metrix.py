"""Metrix: mixup for deep metric learning.

Venkataramanan, Psomas et al., "It Takes Two to Tango: Mixup for Deep
Metric Learning" (ICLR 2022), official code billpsomas/Metrix_ICLR22.

One step, on P x K batches (view role "image"), embeddings = the neck's
output ("eval": a linear 128-d embedding on the pooled encoder feature, as
the paper's), L2-normalised inside the loss:
- clean: `losses.metrix`'s metric loss (contrastive, as the official code,
  or multi-similarity) over the clean embeddings;
- mixed (`mix` != "none"): every row i is mixed with a partner of another
  identity (`losses.sample_mix_partners`), lam ~ Beta(mix_alpha,
  mix_alpha) once per batch (official: alpha 2, one lam per batch), at
  - "input": lam x_i + (1 - lam) x_partner, a second forward pass, or
  - "embedding": lam e_i + (1 - lam) e_partner of the unit embeddings;
  each mixed example is a soft positive / negative of every clean anchor
  with the interpolated target, weighted by `mix_weight` (official 0.4).
`mix="none"` is the unmixed baseline (the clean loss alone).

Differences from the official code (assumptions): partners are random
rows of another identity, not the hardest negative (input mode) or every
negative (embedding mode) of each anchor's positive; every mixed example
counts for every anchor (the paper's general form), not only for the
anchor it was made for; the mixed embedding is re-normalised by the loss;
the official code's random choice per step between positive-negative and
anchor-negative mixing is covered by the soft targets (a mixture of x_i
and x_j is both for the anchors of y_i and y_j). Feature-map mixing (the
paper's best) needs the encoder split before pooling and is not offered.

The paper's "utilization" (mean squared distance from a test example to
its nearest training example in the embedding space) is an evaluator:
`config.evals.<name>.type = "utilization"`.
"""

import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.losses.mixing import METRIX_LOSSES
from idlearn.methods import base
from idlearn.methods.supervised import ClassifierNet

MIXES = ("none", "input", "embedding")


class Metrix(base.Method):
  """Metric loss on clean embeddings + mixed examples with mixed targets."""

  NAMES = ("metrix",)
  FIELDS = {
    "loss": "contrastive",  # contrastive | multi_similarity
    "mix": "input",  # none | input | embedding
    "mix_alpha": 2.0,  # lam ~ Beta(mix_alpha, mix_alpha), one per batch
    "mix_weight": 0.4,  # w: loss = clean + w * mixed
    "margin": 0.5,  # contrastive: negative margin on distances; MS: base
    "alpha": 2.0,  # multi-similarity's positive scale
    "beta": 50.0,  # multi-similarity's negative scale
    "neck": "embedding",  # none | bnneck | embedding
    "neck_dim": 128,  # neck "embedding": its width
    "loss_on": "eval",  # eval (the neck's output) | emb (the encoder's)
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    if cfg["loss"] not in METRIX_LOSSES:
      raise base.field_error(
        name, f"loss={cfg['loss']!r}: one of {METRIX_LOSSES}"
      )
    if cfg["mix"] not in MIXES:
      raise base.field_error(name, f"mix={cfg['mix']!r}: one of {MIXES}")
    if cfg["loss_on"] not in ("emb", "eval"):
      raise base.field_error(
        name, f"loss_on={cfg['loss_on']!r}: expected emb or eval"
      )
    if cfg["mix"] != "none" and cfg["mix_alpha"] <= 0:
      raise base.field_error(
        name, f"mix_alpha={cfg['mix_alpha']}: expected > 0 (or mix='none')"
      )
    self._metrix = sharding.shard_loss(
      losses.metrix,
      setup.mesh,
      loss=cfg["loss"],
      mix_weight=cfg["mix_weight"],
      margin=cfg["margin"],
      alpha=cfg["alpha"],
      beta=cfg["beta"],
    )

  @property
  def neck(self) -> str:
    return self.cfg["neck"]

  @property
  def neck_dim(self) -> int:
    return self.cfg["neck_dim"]

  def network(self):
    return ClassifierNet(
      encoder=self.setup.make_encoder(),
      neck=self.neck,
      neck_dim=self.neck_dim,
      dtype=self.setup.dtype,
    )

  def prepare(self, rng, views, batch):
    """Draws the partners ("mix_partner" int32 [b], "mix_id_b" [b] their
    ids, "mix_lambda" float32 [b]); "input" adds the mixed view."""
    mix = self.cfg["mix"]
    if mix == "none":
      return views, batch
    ids = batch["id"]
    partner, lam = losses.sample_mix_partners(
      rng, ids, alpha=self.cfg["mix_alpha"], per_batch=True
    )
    batch = {
      **batch,
      "mix_partner": partner,
      "mix_id_b": jnp.take(ids, partner, axis=0),
      "mix_lambda": lam,
    }
    if mix == "input":
      x = base.first(views, "image")  # [b, h, w, 3], the global batch
      w = lam[:, None, None, None]
      mixed = w * x + (1.0 - w) * jnp.take(x, partner, axis=0)
      views = {**views, "mixed": (mixed,)}
    return views, batch

  def loss(self, net, views, batch, ctx):
    on, mix = self.cfg["loss_on"], self.cfg["mix"]
    emb = net(base.first(views, "image"))[on]  # [b, d]
    ids = batch["id"]
    if mix == "none":
      value, aux = self._metrix(emb, ids)
      return value, aux, ctx.extras
    lam = batch["mix_lambda"]
    if mix == "input":
      mixed = net(base.first(views, "mixed"))[on]
    else:  # the official code mixes the unit embeddings
      unit = losses.l2_normalize(emb)
      partner = jnp.take(unit, batch["mix_partner"], axis=0)
      mixed = lam[:, None] * unit + (1.0 - lam[:, None]) * partner
    value, aux = self._metrix(emb, ids, mixed, ids, batch["mix_id_b"], lam)
    return value, aux, ctx.extras


METHODS = (Metrix,)

"""Supervised identity learning: triplet + identity CE with a BNNeck, and
FaceNet.

"supervised" is the re-ID "bag of tricks" recipe (Luo et al., CVPRW 2019):
P x K batches, batch-hard triplet loss (Hermans et al., 2017) on the
encoder's pooled embedding, label-smoothed identity cross-entropy on the
BNNeck feature, retrieval with the BNNeck feature. `loss` picks the
triplet alone, the CE alone or both.

"facenet" (Schroff et al., CVPR 2015): a 128-d linear embedding on the
encoder, L2-normalised, trained by the triplet loss on squared distances
with online semi-hard negatives (margin 0.2); verification with it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.encoders import backbone
from idlearn.encoders.heads import DomainDiscriminator
from idlearn.methods import base

LOSSES = ("triplet", "ce", "triplet_ce")


class ClassifierNet(nn.Module):
  """Encoder + neck (+ identity classifier, + domain discriminator).

  Outputs (besides `encoders.backbone`'s): "logits" [n, C] of a bias-free
  classifier on the neck's output (num_classes > 0); "domain_logits",
  "domain_logits_adv" [n, D] of a domain discriminator on "emb"
  (domain_classes > 0, see `heads.DomainDiscriminator`).
  """

  encoder: nn.Module
  neck: str = "bnneck"
  neck_dim: int = 0
  num_classes: int = 0
  domain_classes: int = 0
  domain_hidden: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    out = backbone(
      self.encoder,
      self.neck,
      images,
      train=train,
      dtype=self.dtype,
      neck_dim=self.neck_dim,
    )
    if self.num_classes:
      out["logits"] = nn.Dense(
        self.num_classes, use_bias=False, dtype=self.dtype, name="classifier"
      )(out["eval"]).astype(jnp.float32)
    if self.domain_classes:
      out["domain_logits"], out["domain_logits_adv"] = DomainDiscriminator(
        num_domains=self.domain_classes,
        hidden_dim=self.domain_hidden,
        dtype=self.dtype,
        name="domain_discriminator",
      )(out["emb"], train=train)
    return out


class Supervised(base.Method):
  """Triplet and / or label-smoothed identity CE on one view ("image")."""

  NAMES = ("supervised",)
  FIELDS = {
    "loss": "triplet_ce",  # triplet | ce | triplet_ce
    "neck": "bnneck",  # none | bnneck | embedding
    "neck_dim": 0,  # neck "embedding": its width
    "num_classes": 0,  # classifier width; 0: the training split's ids
    "margin": 0.3,
    "mining": "batch_hard",  # batch_hard | semi_hard | batch_all
    "squared": False,  # squared Euclidean distances
    "normalize": False,  # L2-normalise the triplet's embedding first
    "triplet_on": "emb",  # emb (the encoder's) | eval (the neck's output)
    "triplet_weight": 1.0,
    "ce_weight": 1.0,
    "label_smoothing": 0.1,
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    if cfg["loss"] not in LOSSES:
      raise base.field_error(name, f"loss={cfg['loss']!r}: one of {LOSSES}")
    if cfg["triplet_on"] not in ("emb", "eval"):
      raise base.field_error(
        name, f"triplet_on={cfg['triplet_on']!r}: expected emb or eval"
      )
    self.num_classes = 0
    if cfg["loss"] != "triplet":
      self.num_classes = cfg["num_classes"] or setup.num_classes()
    self._triplet = None
    if cfg["loss"] != "ce":
      self._triplet = sharding.shard_loss(
        losses.triplet,
        setup.mesh,
        margin=cfg["margin"],
        mining=cfg["mining"],
        squared=cfg["squared"],
      )

  @property
  def neck(self) -> str:
    return self.cfg["neck"]

  @property
  def neck_dim(self) -> int:
    return self.cfg["neck_dim"]

  def network(self) -> nn.Module:
    return ClassifierNet(
      encoder=self.setup.make_encoder(),
      neck=self.neck,
      neck_dim=self.neck_dim,
      num_classes=self.num_classes,
      dtype=self.setup.dtype,
    )

  def loss(self, net, views, batch, ctx):
    out = net(base.first(views, "image"))
    value, aux = self.terms(out, batch)
    return value, aux, ctx.extras

  def terms(self, out, batch, *, ids=None, labels=None):
    """(weighted triplet + CE, aux) of one view's outputs."""
    cfg, aux, total = self.cfg, {}, 0.0
    if self._triplet is not None:
      emb = out[cfg["triplet_on"]]
      if cfg["normalize"]:
        emb = losses.l2_normalize(emb)
      t, t_aux = self._triplet(emb, batch["id"] if ids is None else ids)
      aux.update({"triplet": t, **t_aux})
      total = total + cfg["triplet_weight"] * t
    if self.num_classes:
      c, c_aux = losses.identity_ce(
        out["logits"],
        base.labels_of(batch) if labels is None else labels,
        label_smoothing=cfg["label_smoothing"],
      )
      aux.update(c_aux)
      total = total + cfg["ce_weight"] * c
    return total, aux


class FaceNet(Supervised):
  """Supervised with FaceNet's defaults: a 128-d L2-normalised embedding,
  semi-hard triplets on squared distances, margin 0.2, no classifier."""

  NAMES = ("facenet",)
  FIELDS = {
    **Supervised.FIELDS,
    "loss": "triplet",
    "neck": "embedding",
    "neck_dim": 128,
    "margin": 0.2,
    "mining": "semi_hard",
    "squared": True,
    "normalize": True,
    "triplet_on": "eval",
  }


METHODS = (Supervised, FaceNet)

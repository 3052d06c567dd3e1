"""Encoder + heads: the module the train step differentiates.

`IdModel` returns a dict of named outputs for one view:
  "emb"    [n, d]  the encoder's pooled embedding (what re-ID triplet uses),
  "feat"   [n, d]  after the BNNeck (bnneck head),
  "logits" [n, C]  identity classifier on "feat" (bnneck head),
  "proj"   [n, p]  projection MLP output (projection head, SSL losses), or
                   the linear embedding (embedding / margin heads, faces),
  "class_weights" [C, p]  margin head: ArcFace / CosFace class centres,
  "dino"   [n, K]  DINO head prototypes' logits (dino head),
  "domain_logits", "domain_logits_adv" [n, D]  domain discriminator on
                   "emb" (domain_classes > 0; see heads.DomainDiscriminator),
  "eval"   [n, d]  the feature evaluators retrieve with.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn.encoders import heads
from idlearn.training import fields

HEADS = ("none", "bnneck", "projection", "embedding", "margin", "dino")
FIELDS = {
  "encoder": fields.REQUIRED,  # a name of idlearn.encoders.get_encoder
  "encoder_kw": {},  # e.g. {"last_stride": 1, "pooling": "gem"}
  "head": "none",
  "num_classes": 0,  # bnneck / margin heads: identities of the train split
  "proj_hidden": 2048,  # projection / dino head: hidden width
  "proj_out": 128,  # output width (dino: bottleneck width)
  "proj_layers": 2,  # Dense layers (SimCLR 2, DINO 3)
  "dino_out": 4096,  # dino head: prototypes K
  "dino_bn": False,  # dino head: BatchNorm after its hidden layers
  "domain_classes": 0,  # > 0: a domain discriminator on "emb" (DomainMix)
  "domain_hidden": 256,
  "dtype": "float32",  # compute dtype; parameters stay float32
}


class IdModel(nn.Module):
  """An encoder with an optional BNNeck+classifier or projection head.

  Attributes:
    encoder: a module with `__call__(images, *, train) -> (emb, aux)`.
    head: "none", "bnneck" (re-ID: BatchNorm neck + bias-free classifier),
      "projection" (SSL projector MLP), "embedding" (one Dense to proj_out:
      a face embedding), "margin" (embedding + ArcFace/CosFace class
      centres) or "dino" (DINO head, retrieval on the encoder's emb).
    num_classes: classifier width (bnneck, margin).
    proj_hidden, proj_out, proj_layers: projector hidden width, output
      width and Dense layer count (projection, dino).
    dino_out: DINO prototypes.
    dino_bn: BatchNorm in the DINO head's MLP. A small encoder from
      scratch maps all images to nearly one direction (mean pairwise
      cosine 0.95 on MARS crops), so without it the teacher's logits vary
      across the batch by less than its temperature and, once centred,
      its targets are uniform: nothing to distil.
    domain_classes, domain_hidden: the domain discriminator (0: none).
    dtype: compute dtype of the heads.
  """

  encoder: nn.Module
  head: str = "none"
  num_classes: int = 0
  proj_hidden: int = 2048
  proj_out: int = 128
  proj_layers: int = 2
  dino_out: int = 4096
  dino_bn: bool = False
  domain_classes: int = 0
  domain_hidden: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    emb, _ = self.encoder(images, train=train)
    emb = emb.astype(jnp.float32)
    out = {"emb": emb, "eval": emb}
    if self.head == "bnneck":
      feat = heads.BNNeck(dtype=self.dtype, name="bnneck")(emb, train=train)
      out["feat"] = out["eval"] = feat
      out["logits"] = nn.Dense(
        self.num_classes, use_bias=False, dtype=self.dtype, name="classifier"
      )(feat).astype(jnp.float32)
    elif self.head == "projection":
      out["proj"] = heads.ProjectionMLP(
        hidden_dim=self.proj_hidden,
        out_dim=self.proj_out,
        num_layers=self.proj_layers,
        dtype=self.dtype,
        name="projector",
      )(emb, train=train)
    elif self.head in ("embedding", "margin"):
      proj = nn.Dense(self.proj_out, dtype=self.dtype, name="embedding")(emb)
      out["proj"] = out["eval"] = proj.astype(jnp.float32)
      if self.head == "margin":
        out["class_weights"] = self.param(
          "class_weights",
          nn.initializers.normal(0.01),
          (self.num_classes, self.proj_out),
        )
    elif self.head == "dino":
      out["dino"] = heads.DINOHead(
        out_dim=self.dino_out,
        hidden_dim=self.proj_hidden,
        bottleneck_dim=self.proj_out,
        num_layers=self.proj_layers,
        use_bn=self.dino_bn,
        dtype=self.dtype,
        name="dino_head",
      )(emb, train=train)
    if self.domain_classes:
      out["domain_logits"], out["domain_logits_adv"] = (
        heads.DomainDiscriminator(
          num_domains=self.domain_classes,
          hidden_dim=self.domain_hidden,
          dtype=self.dtype,
          name="domain_discriminator",
        )(emb, train=train)
      )
    return out


def make_model(
  config: Mapping[str, Any],
  *,
  encoder: nn.Module | None = None,
  num_classes: int = 0,
) -> IdModel:
  """config.model -> IdModel (the encoder from `idlearn.encoders`).

  Args:
    config: the `config.model` group (fields in `FIELDS`).
    encoder: use this module instead of `get_encoder(config.encoder)`
      (tests, notebooks).
    num_classes: classifier width when `config.num_classes` is 0 (the
      loop passes the training split's identity count).
  """
  cfg = fields.resolve(config, FIELDS, "config.model")
  cfg["num_classes"] = cfg["num_classes"] or num_classes
  fields.choice(cfg["head"], HEADS, "config.model.head")
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(cfg["dtype"])
  if dtype is None:
    raise ValueError(
      f"config.model.dtype = {cfg['dtype']!r}: expected float32 or bfloat16"
    )
  if cfg["head"] in ("bnneck", "margin") and cfg["num_classes"] <= 0:
    raise ValueError(
      f"config.model.num_classes must be > 0 for head={cfg['head']}"
    )
  if encoder is None:
    from idlearn import encoders

    encoder = encoders.get_encoder(
      cfg["encoder"], dtype=dtype, **dict(cfg["encoder_kw"])
    )
  return IdModel(
    encoder=encoder,
    head=cfg["head"],
    num_classes=cfg["num_classes"],
    proj_hidden=cfg["proj_hidden"],
    proj_out=cfg["proj_out"],
    proj_layers=cfg["proj_layers"],
    dino_out=cfg["dino_out"],
    dino_bn=cfg["dino_bn"],
    domain_classes=cfg["domain_classes"],
    domain_hidden=cfg["domain_hidden"],
    dtype=dtype,
  )

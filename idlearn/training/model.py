"""Encoder + heads: the module the train step differentiates.

`IdModel` returns a dict of named outputs for one view:
  "emb"    [n, d]  the encoder's pooled embedding (what re-ID triplet uses),
  "feat"   [n, d]  after the BNNeck (bnneck head),
  "logits" [n, C]  identity classifier on "feat" (bnneck head),
  "proj"   [n, p]  projection MLP output (projection head, SSL losses),
  "eval"   [n, d]  the feature evaluators retrieve with.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn.training import fields

HEADS = ("none", "bnneck", "projection")
FIELDS = {
  "encoder": fields.REQUIRED,  # a name of idlearn.encoders.get_encoder
  "encoder_kw": {},  # e.g. {"last_stride": 1, "pooling": "gem"}
  "head": "none",
  "num_classes": 0,  # bnneck head: identities of the training split
  "proj_hidden": 2048,  # projection head: hidden width
  "proj_out": 128,  # output width
  "proj_layers": 2,  # Dense layers (SimCLR 2)
  "dtype": "float32",  # compute dtype; parameters stay float32
}


class IdModel(nn.Module):
  """An encoder with an optional BNNeck+classifier or projection head.

  Attributes:
    encoder: a module with `__call__(images, *, train) -> (emb, aux)`.
    head: "none", "bnneck" (re-ID: BatchNorm neck + bias-free classifier) or
      "projection" (SSL projector MLP).
    num_classes: classifier width (bnneck).
    proj_hidden, proj_out, proj_layers: projector hidden width, output
      width and Dense layer count (projection).
    dtype: compute dtype of the heads.
  """

  encoder: nn.Module
  head: str = "none"
  num_classes: int = 0
  proj_hidden: int = 2048
  proj_out: int = 128
  proj_layers: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    emb, _ = self.encoder(images, train=train)
    emb = emb.astype(jnp.float32)
    out = {"emb": emb, "eval": emb}
    if self.head == "bnneck":
      from idlearn.encoders import heads

      feat = heads.BNNeck(dtype=self.dtype, name="bnneck")(emb, train=train)
      out["feat"] = out["eval"] = feat
      out["logits"] = nn.Dense(
        self.num_classes, use_bias=False, dtype=self.dtype, name="classifier"
      )(feat).astype(jnp.float32)
    elif self.head == "projection":
      from idlearn.encoders import heads

      out["proj"] = heads.ProjectionMLP(
        hidden_dim=self.proj_hidden,
        out_dim=self.proj_out,
        num_layers=self.proj_layers,
        dtype=self.dtype,
        name="projector",
      )(emb, train=train)
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
  if cfg["head"] == "bnneck" and cfg["num_classes"] <= 0:
    raise ValueError("config.model.num_classes must be > 0 for head=bnneck")
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
    dtype=dtype,
  )

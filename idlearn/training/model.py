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
  "proj_dims": (2048, 128),  # projection head: hidden..., output
  "dtype": "float32",  # compute dtype; parameters stay float32
}


class IdModel(nn.Module):
  """An encoder with an optional BNNeck+classifier or projection head.

  Attributes:
    encoder: a module with `__call__(images, *, train) -> (emb, aux)`.
    head: "none", "bnneck" (re-ID: BatchNorm neck + bias-free classifier) or
      "projection" (SSL projector MLP).
    num_classes: classifier width (bnneck).
    proj_dims: projector layer widths (projection).
    dtype: compute dtype of the heads.
  """

  encoder: nn.Module
  head: str = "none"
  num_classes: int = 0
  proj_dims: tuple[int, ...] = (2048, 128)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    emb, _ = self.encoder(images, train=train)
    emb = emb.astype(jnp.float32)
    out = {"emb": emb, "eval": emb}
    if self.head == "bnneck":
      from idlearn.encoders import heads

      feat = heads.BNNeck(name="bnneck")(emb, train=train)
      out["feat"] = out["eval"] = feat
      out["logits"] = nn.Dense(
        self.num_classes, use_bias=False, dtype=self.dtype, name="classifier"
      )(feat).astype(jnp.float32)
    elif self.head == "projection":
      from idlearn.encoders import heads

      out["proj"] = heads.ProjectionMLP(
        features=tuple(self.proj_dims), dtype=self.dtype, name="projector"
      )(emb, train=train).astype(jnp.float32)
    return out


def make_model(
  config: Mapping[str, Any], *, encoder: nn.Module | None = None
) -> IdModel:
  """config.model -> IdModel (the encoder from `idlearn.encoders`).

  Args:
    config: the `config.model` group (fields in `FIELDS`).
    encoder: use this module instead of `get_encoder(config.encoder)`
      (tests, notebooks).
  """
  cfg = fields.resolve(config, FIELDS, "config.model")
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
    proj_dims=tuple(cfg["proj_dims"]),
    dtype=dtype,
  )

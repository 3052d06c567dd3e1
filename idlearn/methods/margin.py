"""Additive-margin softmax face recognition: ArcFace and CosFace.

ArcFace (Deng et al., CVPR 2019) and CosFace (Wang et al., CVPR 2018): a
linear embedding on the encoder and one learned centre per training
identity; logits `scale * cos(theta_j)`, the target's with an additive
angular (ArcFace: cos(theta_y + m)) or cosine (CosFace: cos(theta_y) - m)
margin. The centres are training-only: verification uses the embedding.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.encoders import backbone
from idlearn.methods import base


class MarginNet(nn.Module):
  """Encoder + linear embedding + class centres ("class_weights" [C, d])."""

  encoder: nn.Module
  neck_dim: int = 128
  num_classes: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    out = backbone(
      self.encoder,
      "embedding",
      images,
      train=train,
      dtype=self.dtype,
      neck_dim=self.neck_dim,
    )
    out["class_weights"] = self.param(
      "class_weights",
      nn.initializers.normal(0.01),
      (self.num_classes, self.neck_dim),
    )
    return out


class _MarginSoftmax(base.Method):
  LOSS = "arcface"
  FIELDS = {
    "scale": 30.0,
    "margin": 0.5,
    "neck_dim": 128,  # the embedding's width
    "num_classes": 0,  # 0: the training split's identities
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    self.num_classes = cfg["num_classes"] or setup.num_classes()
    self._loss = sharding.shard_loss(
      getattr(losses, self.LOSS),
      setup.mesh,
      replicated_args=(1,),  # the centres: every device holds all of them
      scale=cfg["scale"],
      margin=cfg["margin"],
    )

  @property
  def neck(self) -> str:
    return "embedding"

  @property
  def neck_dim(self) -> int:
    return self.cfg["neck_dim"]

  def network(self) -> nn.Module:
    return MarginNet(
      encoder=self.setup.make_encoder(),
      neck_dim=self.neck_dim,
      num_classes=self.num_classes,
      dtype=self.setup.dtype,
    )

  def loss(self, net, views, batch, ctx):
    out = net(base.first(views, "image"))
    value, aux = self._loss(
      out["proj"], out["class_weights"], base.labels_of(batch)
    )
    return value, aux, ctx.extras


class ArcFace(_MarginSoftmax):
  NAMES = ("arcface",)


class CosFace(_MarginSoftmax):
  NAMES = ("cosface",)
  LOSS = "cosface"
  FIELDS = {**_MarginSoftmax.FIELDS, "margin": 0.35}


METHODS = (ArcFace, CosFace)

"""Additive-margin softmax face recognition: ArcFace and CosFace.

ArcFace (Deng et al., CVPR 2019) and CosFace (Wang et al., CVPR 2018): a
linear embedding on the encoder and one learned centre per training
identity; logits `scale * cos(theta_j)`, the target's with an additive
angular (ArcFace: cos(theta_y + m)) or cosine (CosFace: cos(theta_y) - m)
margin. The centres are training-only: verification uses the embedding.

With `shard_classes` the centres are split over the devices (Partial FC,
An et al. 2021: `losses.partial_fc`): each holds 1/n of them, with their
optimizer state, so the class count is bounded by the mesh's memory, not
one device's; `sample_rate` < 1 keeps only that share of each device's
centres (all the batch's own classes among them) in each step's softmax.
The centre rows are padded to a multiple of `CLASS_ROWS` (padding never
enters the softmax), so the same checkpoint restores onto any device count
that divides it.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.encoders import backbone
from idlearn.methods import base

# Centre rows are padded to a multiple of this (and of the device count):
# the checkpoint's shape stays the same on 1, 2, 4 ... 256 devices.
CLASS_ROWS = 256


def class_rows(num_classes: int, devices: int) -> int:
  """Rows of the sharded centres: num_classes padded (see CLASS_ROWS)."""
  step = math.lcm(CLASS_ROWS, devices)
  return -(-num_classes // step) * step


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
    "shard_classes": False,  # Partial FC: centres split over the devices
    "sample_rate": 1.0,  # with shard_classes: share of centres per step
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    self.num_classes = cfg["num_classes"] or setup.num_classes()
    rate, shard = cfg["sample_rate"], cfg["shard_classes"]
    if not 0 < rate <= 1:
      raise base.field_error(name, f"sample_rate={rate}: expected (0, 1]")
    if rate < 1 and not shard:
      raise base.field_error(
        name, f"sample_rate={rate} needs shard_classes=True (Partial FC)"
      )
    hyper = dict(scale=cfg["scale"], margin=cfg["margin"])
    self.rows = self.num_classes
    if shard:
      self.rows = class_rows(
        self.num_classes, setup.mesh.shape[sharding.DATA_AXIS]
      )
      self._loss = sharding.shard_loss(
        _partial_fc,
        setup.mesh,
        replicated_args=(3,),  # the step's key; the centres are split
        kind=self.LOSS,
        num_classes=self.num_classes,
        sample_rate=rate,
        **hyper,
      )
    else:
      self._loss = sharding.shard_loss(
        getattr(losses, self.LOSS),
        setup.mesh,
        replicated_args=(1,),  # the centres: every device holds all of them
        **hyper,
      )

  def sharded_params(self) -> tuple[str, ...]:
    return ("class_weights",) if self.cfg["shard_classes"] else ()

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
      num_classes=self.rows,
      dtype=self.setup.dtype,
    )

  def loss(self, net, views, batch, ctx):
    out = net(base.first(views, "image"))
    args = (out["proj"], out["class_weights"], base.labels_of(batch))
    if self.cfg["shard_classes"]:
      args += (ctx.rng,)
    value, aux = self._loss(*args)
    return value, aux, ctx.extras


def _partial_fc(emb, class_weights, ids, rng, **kw):
  """losses.partial_fc with the step's key as a positional argument."""
  return losses.partial_fc(emb, class_weights, ids, rng=rng, **kw)


class ArcFace(_MarginSoftmax):
  NAMES = ("arcface",)


class CosFace(_MarginSoftmax):
  NAMES = ("cosface",)
  LOSS = "cosface"
  FIELDS = {**_MarginSoftmax.FIELDS, "margin": 0.35}


METHODS = (ArcFace, CosFace)

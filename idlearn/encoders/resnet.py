"""ResNet-18/34/50 (He et al., 2016) with the re-ID options.

torchvision's v1.5 layout (stride on the 3x3 conv of a bottleneck), with:
last stride 1 (Luo et al., 2019, "Bag of Tricks"), IBN-a bottlenecks (Pan et
al., 2018: half of bn1's channels instance-normalised in stages 1-3) and
average or GeM pooling. Module names follow the PyTorch state-dict keys with
"." before an index replaced by "_" (layer1.0.downsample.0 -> layer1_0 /
downsample_0), so weight import is a rename.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn.encoders import stage_layers
from idlearn.encoders.conv import (
  Conv,
  batch_norm,
  global_pool,
  instance_norm,
  max_pool_3x3_s2,
)
from idlearn.encoders.remat import recompute_in_backward

Dtype = Any


class IBN(nn.Module):
  """IBN-a normalisation: InstanceNorm on the first half, BatchNorm on the rest.

  The half is int(c / 2), as IBN-Net; params under "IN" and "BN".
  """

  train: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    a = instance_norm(self.dtype, name="IN")(x[..., :half])
    b = batch_norm(self.train, self.dtype, name="BN")(x[..., half:])
    return jnp.concatenate([a, b], axis=-1)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34); output channels = planes."""

  planes: int
  stride: int = 1
  ibn: bool = False  # unused: IBN-a is defined for bottlenecks only
  train: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "auto"
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = dict(dtype=self.dtype, impl=self.impl)
    bn = dict(train=self.train, dtype=self.dtype)
    y = Conv(self.planes, 3, self.stride, 1, name="conv1", **conv)(x)
    y = batch_norm(name="bn1", relu=True, **bn)(y)
    y = Conv(self.planes, 3, 1, 1, name="conv2", **conv)(y)
    y = batch_norm(name="bn2", **bn)(y)
    return nn.relu(y + _shortcut(self, x, self.planes))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided) -> 1x1 bottleneck; output channels = 4 * planes."""

  planes: int
  stride: int = 1
  ibn: bool = False
  train: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "auto"
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = dict(dtype=self.dtype, impl=self.impl)
    bn = dict(train=self.train, dtype=self.dtype)
    y = Conv(self.planes, 1, name="conv1", **conv)(x)
    if self.ibn:
      y = nn.relu(IBN(self.train, self.dtype, name="bn1")(y))
    else:
      y = batch_norm(name="bn1", relu=True, **bn)(y)
    y = Conv(self.planes, 3, self.stride, 1, name="conv2", **conv)(y)
    y = batch_norm(name="bn2", relu=True, **bn)(y)
    out = 4 * self.planes
    y = Conv(out, 1, name="conv3", **conv)(y)
    y = batch_norm(name="bn3", **bn)(y)
    return nn.relu(y + _shortcut(self, x, out))


def _shortcut(block: nn.Module, x: jax.Array, out: int) -> jax.Array:
  """Identity, or strided 1x1 conv + BN when the shape changes."""
  if block.stride == 1 and x.shape[-1] == out:
    return x
  x = Conv(
    out,
    1,
    block.stride,
    dtype=block.dtype,
    impl=block.impl,
    name="downsample_0",
  )(x)
  return batch_norm(block.train, block.dtype, name="downsample_1")(x)


class ResNet(nn.Module):
  """ResNet backbone: [n, h, w, 3] images -> pooled [n, 4 or 1 * widths[-1]].

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    bottleneck: Bottleneck (True) or BasicBlock (False) blocks.
    widths: planes per stage (torchvision: 64, 128, 256, 512).
    last_stride: stride of the last stage (1 doubles its map, for re-ID).
    ibn: IBN-a in the bottlenecks of all stages but the last.
    pooling: "avg" or "gem".
    dtype: compute dtype (e.g. jnp.bfloat16); params stay float32.
    impl: convolution implementation, see `conv.conv2d`.
    remat: in training, recompute each block in the backward pass
      (`remat.recompute_in_backward`) instead of holding its activations.
    after_stage: layers applied to each stage's output map, one string per
      stage of `stage_layers.LAYERS` names joined by "+" (e.g. ("",
      "cbam+wave", "cbam+wave", "") puts CBAM then WaveBlock after stages
      2 and 3); their parameters sit under "stage{i}_{name}". Layers that
      draw randomness in training ("wave") need their PRNG stream.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  bottleneck: bool = False
  widths: Sequence[int] = (64, 128, 256, 512)
  last_stride: int = 2
  ibn: bool = False
  pooling: str = "avg"
  dtype: Dtype = jnp.float32
  impl: str = "auto"
  remat: bool = False
  after_stage: Sequence[str] = ()

  @property
  def feature_dim(self) -> int:
    return self.widths[-1] * (4 if self.bottleneck else 1)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False):
    """Encodes images.

    Args:
      images: float32 [n, h, w, 3], ImageNet-normalised.
      train: batch statistics from the batch (and updated) if True.
    Returns:
      (emb float32 [n, feature_dim], aux) with aux "stage1".."stage4" feature
      maps [n, h_i, w_i, c_i] (after the stage's `after_stage` layers) and
      "pooled" (= emb).
    """
    if self.last_stride not in (1, 2):
      raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [n, h, w, 3], got {images.shape}")
    inserts = stage_layers.parse(self.after_stage, len(self.stage_sizes))
    x = images.astype(self.dtype)
    x = Conv(
      self.widths[0], 7, 2, 3, dtype=self.dtype, impl=self.impl, name="conv1"
    )(x)
    x = batch_norm(train, self.dtype, name="bn1", relu=True)(x)
    x = max_pool_3x3_s2(x)
    block = Bottleneck if self.bottleneck else BasicBlock
    aux = {}
    for s, (size, planes) in enumerate(
      zip(self.stage_sizes, self.widths, strict=True)
    ):
      stride = 1 if s == 0 else (self.last_stride if s == 3 else 2)
      for b in range(size):
        mdl = block(
          planes,
          stride if b == 0 else 1,
          ibn=self.ibn and s < 3,
          train=train,
          dtype=self.dtype,
          impl=self.impl,
          name=f"layer{s + 1}_{b}",
        )
        x = recompute_in_backward(mdl, x) if self.remat and train else mdl(x)
      for layer in inserts[s]:
        x = stage_layers.make(
          layer, dtype=self.dtype, impl=self.impl,
          module_name=f"stage{s + 1}_{layer}",
        )(x, train=train)  # fmt: skip
      aux[f"stage{s + 1}"] = x
    emb = aux["pooled"] = global_pool(x, self.pooling)
    return emb, aux


# name -> constructor kwargs; "resnet_tiny" is for tests.
VARIANTS = {
  "resnet18": dict(stage_sizes=(2, 2, 2, 2), bottleneck=False),
  "resnet34": dict(stage_sizes=(3, 4, 6, 3), bottleneck=False),
  "resnet50": dict(stage_sizes=(3, 4, 6, 3), bottleneck=True),
  "resnet50_ibn_a": dict(stage_sizes=(3, 4, 6, 3), bottleneck=True, ibn=True),
  "resnet_tiny": dict(
    stage_sizes=(1, 1, 1, 1), bottleneck=False, widths=(8, 16, 24, 32)
  ),
  "resnet_tiny_bottleneck": dict(
    stage_sizes=(1, 1, 1, 1), bottleneck=True, widths=(4, 8, 12, 16)
  ),
}

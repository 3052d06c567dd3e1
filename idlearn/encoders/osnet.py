"""OSNet and OSNet-AIN (Zhou et al., ICCV 2019; TPAMI 2021).

Omni-scale residual blocks: four streams of 1, 2, 3 and 4 lightweight 3x3
convs (1x1 + depthwise 3x3) see four receptive fields; a channel gate shared
by the streams weighs and sums them. OSNet-AIN adds instance normalisation
inside chosen residual blocks (the architecture the seed paper found by
search) and in the stem, for cross-domain generalisation.

Module names follow torchreid's state-dict keys with "." before an index
replaced by "_" (conv2.0.conv2b.1 -> conv2_0 / conv2b_1), so weight import
is a rename. As in torchreid, the embedding is the output of the `fc` layer
(Linear + BatchNorm1d + ReLU, 512-d) on the pooled map; the identity
classifier is not part of the encoder.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn.encoders.conv import (
  Conv,
  batch_norm,
  global_pool,
  instance_norm,
  max_pool_3x3_s2,
)
from idlearn.encoders.remat import recompute_in_backward

Dtype = Any


class _ConvBN(nn.Module):
  """Conv (no bias) + BatchNorm (or InstanceNorm) + optional ReLU.

  torchreid's ConvLayer / Conv1x1 / Conv1x1Linear: params "conv", "bn".
  """

  features: int
  kernel_size: int = 1
  strides: int = 1
  relu: bool = True
  norm: str = "bn"  # "bn", "in" or "none"
  train: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    x = Conv(
      self.features,
      k,
      self.strides,
      k // 2,
      dtype=self.dtype,
      impl=self.impl,
      name="conv",
    )(x)
    if self.norm == "bn":  # the ReLU fused: its mask is the saved output
      return batch_norm(self.train, self.dtype, name="bn", relu=self.relu)(x)
    if self.norm == "in":
      x = instance_norm(self.dtype, name="bn")(x)
    return nn.relu(x) if self.relu else x


class _LightConv3x3(nn.Module):
  """1x1 conv (linear) -> depthwise 3x3 conv -> BN -> ReLU."""

  features: int
  train: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, kw = self.features, dict(dtype=self.dtype, impl=self.impl)
    x = Conv(c, 1, name="conv1", **kw)(x)
    x = Conv(c, 3, 1, 1, groups=c, name="conv2", **kw)(x)
    return batch_norm(self.train, self.dtype, name="bn", relu=True)(x)


class _Stream(nn.Module):
  """`depth` LightConv3x3 in a row (OSNet-AIN's LightConvStream)."""

  depth: int
  features: int
  train: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "auto"
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.depth):
      light = _LightConv3x3(
        self.features, self.train, self.dtype, self.impl, name=f"layers_{i}"
      )
      x = recompute_in_backward(light, x) if self.remat else light(x)
    return x


class _ChannelGate(nn.Module):
  """x * sigmoid(fc2(relu(fc1(mean_hw(x))))), reduction 16."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    g = x.mean(axis=(1, 2), keepdims=True)  # [n, 1, 1, c]
    g = Conv(c // 16, 1, use_bias=True, dtype=self.dtype, name="fc1")(g)
    g = Conv(c, 1, use_bias=True, dtype=self.dtype, name="fc2")(nn.relu(g))
    return x * nn.sigmoid(g)


class _OSBlock(nn.Module):
  """Omni-scale residual block.

  Attributes:
    features: output channels (the streams use features // 4).
    ain: torchreid's osnet_ain naming (conv2_t / layers_i streams).
    in_out: InstanceNorm after the residual sum (osnet_ibn; "IN").
    in_in: InstanceNorm on the residual branch instead of conv3's BN
      (OSNet-AIN's OSBlockINin; "IN").
  """

  features: int
  ain: bool = False
  in_out: bool = False
  in_in: bool = False
  train: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "auto"
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mid = self.features // 4
    kw = dict(train=self.train, dtype=self.dtype, impl=self.impl)
    x1 = _ConvBN(mid, name="conv1", **kw)(x)
    gate = _ChannelGate(self.dtype, name="gate")  # shared by the 4 streams
    x2 = 0
    for t in range(1, 5):
      if self.ain:
        y = _Stream(t, mid, name=f"conv2_{t - 1}", remat=self.remat, **kw)(x1)
      else:
        y = x1
        for i in range(t):
          name = "conv2" + "abcd"[t - 1] + (f"_{i}" if t > 1 else "")
          light = _LightConv3x3(mid, name=name, **kw)
          y = recompute_in_backward(light, y) if self.remat else light(y)
      x2 = x2 + gate(y)
    norm = "none" if self.in_in else "bn"
    x3 = _ConvBN(self.features, relu=False, norm=norm, name="conv3", **kw)(x2)
    if self.in_in:
      x3 = instance_norm(self.dtype, name="IN")(x3)
    if x.shape[-1] != self.features:
      x = _ConvBN(self.features, relu=False, name="downsample", **kw)(x)
    out = x3 + x
    if self.in_out:
      out = instance_norm(self.dtype, name="IN")(out)
    return nn.relu(out)


class OSNet(nn.Module):
  """OSNet backbone + fc: [n, h, w, 3] -> [n, fc_dim] (or [n, channels[3]]).

  Attributes:
    channels: stem and stage widths, e.g. (64, 256, 384, 512) for x1.0.
    blocks: per stage, one entry per block: "os" (plain), "ibn" (IN after
      the sum, osnet_ibn) or "in" (IN inside the residual, OSNet-AIN).
    ain: OSNet-AIN's layout (IN stem, separate pool2/pool3 layers, stream
      naming).
    fc_dim: width of the fc layer (Linear + BN1d + ReLU) after pooling, or
      None for the pooled map itself.
    pooling: "avg" or "gem".
    dtype: compute dtype; params stay float32.
    impl: convolution implementation, see `conv.conv2d`.
    remat: in training, keep only each block's input for the backward
      pass and recompute the rest there (`remat.recompute_in_backward`):
      ~5x less activation memory (the two-view batch 64 at 256x128 fits
      in ~3 GB of XLA temp instead of ~16 GB), and faster on CPU.
  """

  channels: Sequence[int] = (64, 256, 384, 512)
  blocks: Sequence[Sequence[str]] = (("os", "os"),) * 3
  ain: bool = False
  fc_dim: int | None = 512
  pooling: str = "avg"
  dtype: Dtype = jnp.float32
  impl: str = "auto"
  remat: bool = True

  @property
  def feature_dim(self) -> int:
    return self.fc_dim or self.channels[3]

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False):
    """Encodes images.

    Args:
      images: float32 [n, h, w, 3], ImageNet-normalised.
      train: batch statistics from the batch (and updated) if True.
    Returns:
      (emb float32 [n, feature_dim], aux) with aux "stage1".."stage3"
      feature maps, "conv5" (last map) and "pooled" [n, channels[3]].
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [n, h, w, 3], got {images.shape}")
    kw = dict(train=train, dtype=self.dtype, impl=self.impl)
    remat = self.remat and train  # nothing to save for in inference
    stem_norm = "in" if self.ain or "ibn" in self.blocks[0] else "bn"
    x = images.astype(self.dtype)
    stem = _ConvBN(self.channels[0], 7, 2, norm=stem_norm, name="conv1", **kw)
    if remat:
      x = recompute_in_backward(stem, x, max_pool_3x3_s2)
    else:
      x = max_pool_3x3_s2(stem(x))
    aux = {}
    for s, kinds in enumerate(self.blocks):
      c = self.channels[s + 1]
      for b, kind in enumerate(kinds):
        block = _OSBlock(
          c,
          ain=self.ain,
          in_out=kind == "ibn",
          in_in=kind == "in",
          remat=remat,
          name=f"conv{s + 2}_{b}",
          **kw,
        )
        x = recompute_in_backward(block, x) if remat else block(x)
      if s < 2:  # 1x1 conv + 2x2 average pooling between stages
        name = f"pool{s + 2}_0" if self.ain else f"conv{s + 2}_{len(kinds)}_0"
        x = _ConvBN(c, name=name, **kw)(x)
        # keywords: jax2onnx patches avg_pool and takes them by keyword
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
      aux[f"stage{s + 1}"] = x
    x = aux["conv5"] = _ConvBN(self.channels[3], name="conv5", **kw)(x)
    emb = aux["pooled"] = global_pool(x, self.pooling)
    if self.fc_dim:
      emb = nn.Dense(self.fc_dim, dtype=self.dtype, name="fc_0")(emb)
      emb = batch_norm(train, self.dtype, name="fc_1")(emb)
      emb = nn.relu(emb).astype(jnp.float32)
    return emb, aux


_WIDTHS = {
  "x1_0": (64, 256, 384, 512),
  "x0_75": (48, 192, 288, 384),
  "x0_5": (32, 128, 192, 256),
  "x0_25": (16, 64, 96, 128),
}
_AIN_BLOCKS = (("in", "in"), ("os", "in"), ("in", "os"))

# name -> constructor kwargs; "osnet_tiny" / "osnet_ain_tiny" are for tests.
VARIANTS = {f"osnet_{w}": dict(channels=c) for w, c in _WIDTHS.items()}
VARIANTS |= {
  f"osnet_ain_{w}": dict(channels=c, ain=True, blocks=_AIN_BLOCKS)
  for w, c in _WIDTHS.items()
}
VARIANTS["osnet_ibn_x1_0"] = dict(
  blocks=(("ibn", "ibn"), ("os", "os"), ("os", "os"))
)
# One block per stage keeps their compile time low; mid width 16 is the
# least that leaves the channel gate (mid // 16) a unit.
VARIANTS["osnet_tiny"] = dict(
  channels=(8, 64, 64, 64), fc_dim=32, blocks=(("os",),) * 3
)
VARIANTS["osnet_ain_tiny"] = dict(
  channels=(8, 64, 64, 64),
  fc_dim=32,
  ain=True,
  blocks=(("in",), ("os",), ("in",)),
)

"""Layers that a ResNet inserts after a stage (`ResNet.after_stage`).

Each maps a feature map [n, h, w, c] to one of the same shape, so that it
can sit between two stages without changing the stages around it:

- "wave": WaveBlock (Wang et al., "Attentive WaveBlock", IEEE TIP 2022):
  in training, multiplies the map by `factor` (1.5) except for one random
  band of round(ratio * h) rows (ratio 0.3) kept at 1; one band per call,
  shared by the batch, drawn from the "waveblock" PRNG stream. Identity in
  evaluation. Parameter-free.
- "cbam": x + CBAM(x) (Woo et al., ECCV 2018): a channel gate (average- and
  max-pooled descriptors through one shared MLP, reduction 16, sigmoid),
  then a spatial gate (channel max and mean, 7x7 conv + BN, sigmoid); the
  residual sum as AWB's "Pre-A" uses it.
- "nonlocal": the dot-product non-local block (Wang et al., CVPR 2018):
  theta, phi, g 1x1 convs to c / 2 channels, f = theta phi^T / N over the
  N = h * w positions (no sub-sampling), y = f g, z = x + BN(W y) with
  the BN's scale and shift initialised to 0 (an identity at init); AWB's
  "Post-A".

The layers follow the AWB official code (github.com/WangWenhao0716/
Attentive-WaveBlock, `models_{pre,post}_a_s2`: `Waveblock`, `cbam.py`,
`non_local_dot_product.py`).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn.encoders.conv import BatchNorm, Conv

Dtype = Any
WAVE_STREAM = "waveblock"


class WaveBlock(nn.Module):
  """x * mask, mask = factor except one random band of rows at 1.

  Attributes:
    ratio: band height / map height (rounded to whole rows).
    factor: the multiplier outside the band.
  """

  ratio: float = 0.3
  factor: float = 1.5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[n, h, w, c] -> [n, h, w, c]; needs the "waveblock" PRNG stream in
    training (`apply(..., rngs={"waveblock": key})`)."""
    if not train:
      return x
    if not self.has_rng(WAVE_STREAM):
      raise ValueError(
        "WaveBlock in training needs a 'waveblock' PRNG stream: "
        "apply(..., rngs={'waveblock': key})"
      )
    h = x.shape[1]
    band = int(round(self.ratio * h))  # Python's round, as the official code
    start = jax.random.randint(self.make_rng(WAVE_STREAM), (), 0, h - band + 1)
    rows = jnp.arange(h)
    inside = (rows >= start) & (rows < start + band)  # [h]
    mask = jnp.where(inside, 1.0, self.factor).astype(x.dtype)
    return x * mask[None, :, None, None]


class CBAM(nn.Module):
  """x + CBAM(x): channel gate, then spatial gate (see the module doc).

  Attributes:
    reduction: hidden width of the channel MLP = c // reduction (>= 1).
    dtype: compute dtype.
    impl: convolution implementation (`conv.conv2d`).
  """

  reduction: int = 16
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[n, h, w, c] -> [n, h, w, c]."""
    c = x.shape[-1]
    hidden = nn.Dense(max(1, c // self.reduction), dtype=self.dtype,
                      name="mlp_0")  # fmt: skip
    out = nn.Dense(c, dtype=self.dtype, name="mlp_2")
    mlp = lambda v: out(nn.relu(hidden(v)))
    gate = mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2)))  # [n, c]
    y = x * nn.sigmoid(gate)[:, None, None, :]
    pooled = jnp.stack([y.max(axis=-1), y.mean(axis=-1)], -1)  # [n, h, w, 2]
    s = Conv(1, 7, 1, 3, dtype=self.dtype, impl=self.impl, name="spatial")(
      pooled
    )
    # PyTorch BatchNorm2d(momentum=0.01), as the official BasicConv
    s = BatchNorm(
      use_running_average=not train,
      momentum=0.99,
      epsilon=1e-5,
      dtype=self.dtype,
      name="spatial_bn",
    )(s)
    return x + y * nn.sigmoid(s)


class NonLocal(nn.Module):
  """x + BN(W f(theta, phi) g): dot-product non-local block.

  Attributes:
    dtype: compute dtype.
    impl: convolution implementation (`conv.conv2d`).
  """

  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[n, h, w, c] -> [n, h, w, c]; an identity at initialisation."""
    n, h, w, c = x.shape
    inter = max(1, c // 2)
    conv = lambda name, width: Conv(
      width, 1, use_bias=True, dtype=self.dtype, impl=self.impl, name=name
    )
    flat = lambda v: v.reshape(n, h * w, inter)  # [n, N, c']
    theta, phi = flat(conv("theta", inter)(x)), flat(conv("phi", inter)(x))
    g = flat(conv("g", inter)(x))
    f = jnp.einsum("nic,njc->nij", theta, phi) / (h * w)  # [n, N, N]
    y = jnp.einsum("nij,njc->nic", f, g).reshape(n, h, w, inter)
    y = conv("W_0", c)(y)
    # flax's BatchNorm: `conv.BatchNorm` has no zero init of its scale
    y = nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=self.dtype,
      scale_init=nn.initializers.zeros,
      name="W_1",
    )(y)
    return x + y


LAYERS = {"wave": WaveBlock, "cbam": CBAM, "nonlocal": NonLocal}


def parse(after_stage: Sequence[str], stages: int) -> list[list[str]]:
  """`after_stage` -> per stage the names of its layers, in order.

  Args:
    after_stage: one string per stage (fewer: the rest empty), each ""
      or layer names of `LAYERS` joined by "+", e.g. ("", "cbam+wave",
      "cbam+wave", "").
    stages: the encoder's number of stages.
  Raises:
    ValueError: too many entries, an unknown name, a name twice in a stage.
  """
  if isinstance(after_stage, str) or len(after_stage) > stages:
    raise ValueError(
      f"after_stage must be a sequence of <= {stages} strings (one per "
      f"stage), got {after_stage!r}"
    )
  out = []
  for s in range(stages):
    spec = after_stage[s] if s < len(after_stage) else ""
    names = [n for n in spec.split("+") if n]
    unknown = [n for n in names if n not in LAYERS]
    if unknown or len(set(names)) != len(names):
      raise ValueError(
        f"after_stage[{s}] = {spec!r}: expected distinct names of "
        f"{sorted(LAYERS)} joined by '+'"
      )
    out.append(names)
  return out


def make(name: str, *, dtype: Dtype, impl: str, module_name: str) -> nn.Module:
  """The layer `name` of `LAYERS`, named `module_name`."""
  if name == "wave":
    return WaveBlock(name=module_name)
  return LAYERS[name](dtype=dtype, impl=impl, name=module_name)

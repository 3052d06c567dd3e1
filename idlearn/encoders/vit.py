"""Vision Transformer (Dosovitskiy et al., 2021), timm's layout.

Pre-norm blocks (LayerNorm eps 1e-6, exact GELU), a class token and learned
absolute position embeddings for a fixed `img_size` (any size divisible by
the patch, e.g. 256x128 for re-ID or 112x112 for faces; weights trained at
another size are resized by `idlearn.pretrained.from_torch`). Module names
follow timm's state-dict keys with "." before an index replaced by "_"
(blocks.0.attn.qkv -> blocks_0 / attn / qkv).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

_LN_EPS = 1e-6  # timm's ViT LayerNorm epsilon (PyTorch's default is 1e-5)


class _Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection (timm)."""

  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, t, d = x.shape
    h = self.num_heads
    qkv = nn.Dense(3 * d, dtype=self.dtype, name="qkv")(x)
    qkv = qkv.reshape(n, t, 3, h, d // h)  # timm's split order: (3, heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [n, t, h, dh]
    logits = jnp.einsum("nqhc,nkhc->nhqk", q * (d // h) ** -0.5, k)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    y = jnp.einsum("nhqk,nkhc->nqhc", attn.astype(self.dtype), v)
    return nn.Dense(d, dtype=self.dtype, name="proj")(y.reshape(n, t, d))


class _Block(nn.Module):
  """x + attn(norm1(x)); x + mlp(norm2(x))."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    ln = dict(epsilon=_LN_EPS, dtype=self.dtype)
    x = x + _Attention(self.num_heads, self.dtype, name="attn")(
      nn.LayerNorm(name="norm1", **ln)(x)
    )
    y = nn.LayerNorm(name="norm2", **ln)(x)
    return x + _Mlp(int(d * self.mlp_ratio), self.dtype, name="mlp")(y)


class _Mlp(nn.Module):
  """fc1 -> exact GELU -> fc2."""

  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
    y = nn.gelu(y, approximate=False)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class ViT(nn.Module):
  """ViT encoder: [n, h, w, 3] images -> [n, width] (class token or mean).

  Attributes:
    width, depth, num_heads, mlp_ratio: transformer size.
    patch: patch side (16 or 8).
    img_size: (h, w) the position embeddings are laid out for; inputs must
      have this size.
    pooling: "cls" (normed class token) or "mean" (mean of the normed patch
      tokens).
    dtype: compute dtype; params stay float32.
  """

  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  patch: int = 16
  img_size: Sequence[int] = (224, 224)
  pooling: str = "cls"
  dtype: Dtype = jnp.float32

  @property
  def feature_dim(self) -> int:
    return self.width

  @property
  def grid(self) -> tuple[int, int]:
    """Patch grid (gh, gw) for img_size."""
    h, w = self.img_size
    if h % self.patch or w % self.patch:
      raise ValueError(
        f"img_size {tuple(self.img_size)} must be divisible by the patch "
        f"size {self.patch}"
      )
    return h // self.patch, w // self.patch

  @nn.compact
  def __call__(
    self,
    images: jax.Array,
    *,
    train: bool = False,
    keep: jax.Array | None = None,
  ):
    """Encodes images, or only some of their patches (masked modelling).

    Args:
      images: float32 [n, h, w, 3] with (h, w) == img_size, normalised.
      train: unused (no dropout or batch statistics); kept for the contract.
      keep: None (every patch), or int32 [n, k] indices (row-major on the
        patch grid) of the patches to encode: the others are dropped after
        the position embedding, as MAE's encoder does with masked patches.
    Returns:
      (emb float32 [n, width], aux) with aux "tokens" [n, 1 + k, width]
      (k = gh * gw without `keep`; after the final norm) and "pooled"
      (= emb, pooled over the encoded tokens).
    """
    del train
    if self.pooling not in ("cls", "mean"):
      raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
    gh, gw = self.grid
    if images.ndim != 4 or images.shape[1:] != (
      gh * self.patch,
      gw * self.patch,
      3,
    ):
      raise ValueError(
        f"images must be [n, {self.img_size[0]}, {self.img_size[1]}, 3] "
        f"(img_size), got {images.shape}"
      )
    n, d = images.shape[0], self.width
    x = images.astype(self.dtype)
    x = _PatchEmbed(d, self.patch, self.dtype, name="patch_embed")(x)
    x = x.reshape(n, gh * gw, d)
    init = nn.initializers.normal(0.02)
    cls = self.param("cls_token", init, (1, 1, d))
    pos = self.param("pos_embed", init, (1, 1 + gh * gw, d))
    pos = pos.astype(x.dtype)
    x = x + pos[:, 1:]  # [n, gh * gw, d]
    if keep is not None:
      x = jnp.take_along_axis(x, keep[:, :, None], axis=1)  # [n, k, d]
    cls = jnp.broadcast_to(cls.astype(x.dtype) + pos[:, :1], (n, 1, d))
    x = jnp.concatenate([cls, x], axis=1)
    for i in range(self.depth):
      x = _Block(
        self.num_heads, self.mlp_ratio, self.dtype, name=f"blocks_{i}"
      )(x)
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="norm")(x)
    emb = x[:, 0] if self.pooling == "cls" else x[:, 1:].mean(axis=1)
    emb = emb.astype(jnp.float32)
    return emb, {"tokens": x, "pooled": emb}


# The transformer block, for decoders built of the encoder's blocks (MAE-style
# pixel decoders).
Block = _Block


class _PatchEmbed(nn.Module):
  """Non-overlapping patch projection; params "proj" (a conv with bias)."""

  width: int
  patch: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[n, h, w, 3] -> [n, h / p, w / p, width]."""
    n, h, w, c = x.shape
    p = self.patch
    # [n, gh, p, gw, p, c] -> [n, gh, gw, (p, p, c)]: the im2col of a
    # stride-p conv, so "proj" keeps nn.Conv's HWIO kernel layout.
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, h // p, w // p, p * p * c)
    return _Proj(self.width, p, self.dtype, name="proj")(x)


class _Proj(nn.Module):
  """A stride-patch conv applied to its im2col columns [..., (p, p, c)]."""

  width: int
  patch: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, cols: jax.Array) -> jax.Array:
    c = cols.shape[-1] // (self.patch * self.patch)
    shape = (self.patch, self.patch, c, self.width)
    kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
    bias = self.param("bias", nn.initializers.zeros, (self.width,))
    w = kernel.reshape(-1, self.width).astype(self.dtype)
    return cols @ w + bias.astype(self.dtype)


def _variant(width, depth, heads, patch):
  return dict(width=width, depth=depth, num_heads=heads, patch=patch)


# name -> constructor kwargs (timm's vit_{tiny,small,base}_patch{16,8}).
VARIANTS = {
  "vit_ti16": _variant(192, 12, 3, 16),
  "vit_s16": _variant(384, 12, 6, 16),
  "vit_b16": _variant(768, 12, 12, 16),
  "vit_ti8": _variant(192, 12, 3, 8),
  "vit_s8": _variant(384, 12, 6, 8),
  "vit_b8": _variant(768, 12, 12, 8),
  "vit_tiny": dict(_variant(32, 2, 2, 8), img_size=(32, 16)),
}

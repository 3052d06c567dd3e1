"""Heads that sit on an encoder's embedding; separate modules, never inside it.

All take emb [b, d] and `train` (for their batch norms) and return [b, out].
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn.encoders.conv import batch_norm

Dtype = Any


def _l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  # Clip the squared norm before rsqrt: finite gradients at x = 0.
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, 1e-24))


class ProjectionMLP(nn.Module):
  """SimCLR / BYOL / SimSiam projector: (Dense -> BN -> ReLU) x (n-1) -> Dense.

  Attributes:
    hidden_dim: width of the hidden layers.
    out_dim: output width.
    num_layers: Dense layers in total (SimCLR 2, SimSiam 3).
    last_bn: BatchNorm without affine params on the output (SimSiam, Barlow
      Twins-style projectors use one).
    dtype: compute dtype; params stay float32.
  """

  hidden_dim: int = 2048
  out_dim: int = 128
  num_layers: int = 2
  last_bn: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, emb: jax.Array, *, train: bool = False) -> jax.Array:
    """[b, d] -> float32 [b, out_dim]."""
    if self.num_layers < 1:
      raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
    x = emb.astype(self.dtype)
    for i in range(self.num_layers - 1):
      x = nn.Dense(
        self.hidden_dim, use_bias=False, dtype=self.dtype, name=f"dense{i}"
      )(x)
      x = nn.relu(batch_norm(train, self.dtype, name=f"bn{i}")(x))
    last = self.num_layers - 1
    x = nn.Dense(
      self.out_dim,
      use_bias=not self.last_bn,
      dtype=self.dtype,
      name=f"dense{last}",
    )(x)
    if self.last_bn:
      x = batch_norm(
        train, self.dtype, name=f"bn{last}", use_scale=False, use_bias=False
      )(x)
    return x.astype(jnp.float32)


class Predictor(nn.Module):
  """BYOL / SimSiam predictor: Dense -> BN -> ReLU -> Dense.

  Attributes:
    hidden_dim: bottleneck width (SimSiam 512, BYOL 4096).
    out_dim: output width (= the projector's out_dim).
  """

  hidden_dim: int = 512
  out_dim: int = 2048
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """[b, d] -> float32 [b, out_dim]."""
    x = nn.Dense(
      self.hidden_dim, use_bias=False, dtype=self.dtype, name="dense0"
    )(z.astype(self.dtype))
    x = nn.relu(batch_norm(train, self.dtype, name="bn0")(x))
    x = nn.Dense(self.out_dim, dtype=self.dtype, name="dense1")(x)
    return x.astype(jnp.float32)


class BNNeck(nn.Module):
  """BNNeck (Luo et al., 2019): BatchNorm1d with its shift frozen at zero.

  The metric loss (triplet) uses the encoder's emb; the identity loss and
  retrieval use BNNeck(emb), which sits on a hypersphere-friendly scale.
  No bias: the bias would shift every feature alike and is fixed at 0 in
  the paper.
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, emb: jax.Array, *, train: bool = False) -> jax.Array:
    """[b, d] -> float32 [b, d]."""
    bn = batch_norm(train, self.dtype, name="bn", use_bias=False)
    return bn(emb.astype(self.dtype)).astype(jnp.float32)


class DINOHead(nn.Module):
  """DINO head (Caron et al., 2021): MLP -> L2 norm -> weight-normed linear.

  Attributes:
    out_dim: prototypes K (e.g. 65536).
    hidden_dim: MLP width.
    bottleneck_dim: MLP output width before the prototypes.
    num_layers: MLP Dense layers (GELU between).
    use_bn: BatchNorm after each hidden Dense.
    norm_last_layer: fix the weight-norm gain g at 1 (DINO's default);
      otherwise learn g per prototype ("last_layer_g").
  """

  out_dim: int = 65536
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  use_bn: bool = False
  norm_last_layer: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, emb: jax.Array, *, train: bool = False) -> jax.Array:
    """[b, d] -> float32 logits [b, out_dim]."""
    init = nn.initializers.truncated_normal(0.02)
    x = emb.astype(self.dtype)
    for i in range(self.num_layers - 1):
      x = nn.Dense(
        self.hidden_dim, kernel_init=init, dtype=self.dtype, name=f"mlp{i}"
      )(x)
      if self.use_bn:
        x = batch_norm(train, self.dtype, name=f"bn{i}")(x)
      x = nn.gelu(x, approximate=False)
    x = nn.Dense(
      self.bottleneck_dim,
      kernel_init=init,
      dtype=self.dtype,
      name=f"mlp{self.num_layers - 1}",
    )(x)
    x = _l2_normalize(x.astype(jnp.float32))
    v = self.param("last_layer_v", init, (self.bottleneck_dim, self.out_dim))
    w = _l2_normalize(v, axis=0)  # each prototype (column) has unit norm
    if not self.norm_last_layer:
      w = w * self.param("last_layer_g", nn.initializers.ones, (self.out_dim,))
    return x @ w


class DomainDiscriminator(nn.Module):
  """Domain classifier for adversarial domain-invariant features (DomainMix).

  Dense -> ReLU -> Dense, applied twice: `logits` on stop-gradient
  features (its loss trains the discriminator only) and `logits_adv` with
  stop-gradient parameters (its loss, e.g. the domain-balance loss, trains
  the encoder only). One backward pass then does both sides of the
  adversarial game.

  Attributes:
    num_domains: D, output width.
    hidden_dim: hidden width.
  """

  num_domains: int = 2
  hidden_dim: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, emb: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    """[b, d] -> (logits, logits_adv), float32 [b, num_domains] each."""
    del train
    d = emb.shape[-1]
    init = nn.initializers.lecun_normal()
    w1 = self.param("w1", init, (d, self.hidden_dim))
    b1 = self.param("b1", nn.initializers.zeros, (self.hidden_dim,))
    w2 = self.param("w2", init, (self.hidden_dim, self.num_domains))
    b2 = self.param("b2", nn.initializers.zeros, (self.num_domains,))
    params = (w1, b1, w2, b2)

    def apply(x, p):
      x = x.astype(self.dtype)
      h = nn.relu(x @ p[0].astype(self.dtype) + p[1])
      return (h @ p[2].astype(self.dtype) + p[3]).astype(jnp.float32)

    sg = jax.lax.stop_gradient
    return apply(sg(emb), params), apply(emb, sg(params))


class DomainDecouple(nn.Module):
  """Splits an embedding into identity- and domain-relevant parts (LDE).

  A per-sample channel gate a = sigmoid(W2 relu(W1 e + b1) + b2) (SE-style,
  width d / reduction) gives identity = a * e and domain = (1 - a) * e:
  complementary parts of the same channels, so domain directions live in
  the identity feature's space. The gate's form is our assumption (the
  paper's Domain Decouple Module is not described in what we have).

  Attributes:
    reduction: hidden width = d // reduction.
  """

  reduction: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, emb: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    """[b, d] -> (identity, domain), float32 [b, d] each."""
    del train
    d = emb.shape[-1]
    x = emb.astype(self.dtype)
    h = nn.relu(nn.Dense(max(d // self.reduction, 1), dtype=self.dtype)(x))
    gate = nn.sigmoid(nn.Dense(d, dtype=self.dtype)(h)).astype(jnp.float32)
    emb = emb.astype(jnp.float32)
    return gate * emb, (1 - gate) * emb

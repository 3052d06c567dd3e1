"""The retrieval encoder: an encoder and its neck, as training leaves it.

A method's network calls `backbone(...)` inside its own compact
`__call__`; `Backbone` is that call alone. Both create the submodules under
the same names ("encoder", and "bnneck" or "embedding" for the neck), so the
parameters a method trains at those paths apply to `Backbone` unchanged:
the in-loop evaluators, `idlearn.load` and the exports all embed with it.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn.encoders import heads

# none: the encoder's pooled embedding; bnneck: BatchNorm with the shift
# frozen at 0 (re-ID, Luo et al. 2019); embedding: one Dense (faces);
# decoupled: an identity / domain split of the embedding, then a BNNeck on
# the identity part (LDE); slice: the first neck_dim dimensions of the
# embedding, no parameters (SIE's invariant part).
NECKS = ("none", "bnneck", "embedding", "decoupled", "slice")
NECK_PARAMS = {
  "none": (),
  "bnneck": ("bnneck",),
  "embedding": ("embedding",),
  "decoupled": ("decouple", "bnneck"),
  "slice": (),
}


def backbone(
  encoder: nn.Module,
  neck: str,
  images: jax.Array,
  *,
  train: bool,
  dtype: Any = jnp.float32,
  neck_dim: int = 0,
) -> dict[str, jax.Array]:
  """The encoder and its neck; call inside a compact module's `__call__`.

  Args:
    encoder: the encoder module (images -> (emb, aux)), an attribute of the
      calling module named "encoder".
    neck: one of `NECKS`.
    images: float32 [n, h, w, 3].
    train: training mode.
    dtype: the neck's compute dtype.
    neck_dim: embedding width (neck "embedding"), dimensions kept (neck
      "slice").
  Returns:
    {"emb": float32 [n, d] the encoder's pooled embedding, "eval": the
    retrieval feature (the neck's output, else "emb")}, plus "feat"
    (bnneck, decoupled) or "proj" (embedding): the neck's output; for
    decoupled "emb" is the identity part and "domain" [n, d] the domain
    part (`heads.DomainDecouple`).
  """
  emb, _ = encoder(images, train=train)
  emb = emb.astype(jnp.float32)
  if neck == "decoupled":
    emb, domain = heads.DomainDecouple(dtype=dtype, name="decouple")(emb)
    feat = heads.BNNeck(dtype=dtype, name="bnneck")(emb, train=train)
    return {"emb": emb, "eval": feat, "feat": feat, "domain": domain}
  out = {"emb": emb, "eval": emb}
  if neck == "bnneck":
    feat = heads.BNNeck(dtype=dtype, name="bnneck")(emb, train=train)
    out["feat"] = out["eval"] = feat
  elif neck == "embedding":
    if neck_dim <= 0:
      raise ValueError(f"neck 'embedding' needs neck_dim > 0, got {neck_dim}")
    proj = nn.Dense(neck_dim, dtype=dtype, name="embedding")(emb)
    out["proj"] = out["eval"] = proj.astype(jnp.float32)
  elif neck == "slice":
    if not 0 < neck_dim <= emb.shape[-1]:
      raise ValueError(
        f"neck 'slice' needs 0 < neck_dim <= {emb.shape[-1]} (the "
        f"embedding's width), got {neck_dim}"
      )
    out["eval"] = emb[:, :neck_dim]
  elif neck != "none":
    raise ValueError(f"neck={neck!r}: expected one of {NECKS}")
  return out


class Backbone(nn.Module):
  """images float32 [n, h, w, 3] -> {"emb", "eval", ...} (see `backbone`).

  Attributes:
    encoder: the encoder module.
    neck: one of `NECKS`.
    neck_dim: embedding width (neck "embedding"), dimensions kept (neck
      "slice").
    dtype: the neck's compute dtype.
  """

  encoder: nn.Module
  neck: str = "none"
  neck_dim: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    return backbone(
      self.encoder,
      self.neck,
      images,
      train=train,
      dtype=self.dtype,
      neck_dim=self.neck_dim,
    )


def select_params(tree: Any, neck: str) -> dict:
  """The `Backbone` part of a method network's params or batch_stats."""
  keys = ("encoder", *NECK_PARAMS[neck])
  return {k: tree[k] for k in keys if k in tree}

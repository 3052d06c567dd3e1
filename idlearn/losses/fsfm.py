"""FSFM's objectives (Wang et al., CVPR 2025, "A Generalizable Face Security
Foundation Model via Self-Supervised Facial Representation Learning").

Total loss of the official code (`fsfm-3c/pretrain/engine_pretrain.py`):

  L = L_rec_all + w_sfr * L_rec_sfr + w_cl * L_cl,  w_sfr 0.007, w_cl 0.1,

with L_rec_all the masked-patch MSE over the CRFR-P mask, L_rec_sfr the
same over the fully covered facial region only (both
`masked_reconstruction`) and L_cl SimSiam's negative cosine between the
online predictor's output and the EMA target's projection
(`negative_cosine`). None of them mixes samples, so they need no
cross-device gathering: under `jit` with a batch-sharded input the global
sums below are exact.
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import Aux, l2_normalize


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """Images -> their non-overlapping patches, as the ViT embeds them.

  Args:
    images: [n, h, w, c], h and w multiples of `patch`.
    patch: patch side p.
  Returns:
    [n, L, p * p * c], L = (h / p) * (w / p) row-major on the patch grid,
    each patch flattened in (row, column, channel) order (the layout of
    `encoders.vit`'s patch embedding and of the pixel decoder's output).
  """
  n, h, w, c = images.shape
  if h % patch or w % patch:
    raise ValueError(f"images {images.shape} not divisible by patch {patch}")
  x = images.reshape(n, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, (h // patch) * (w // patch), patch * patch * c)


def masked_reconstruction(
  pred: jax.Array,
  target: jax.Array,
  mask: jax.Array,
  *,
  norm_pix: bool = True,
  eps: float = 1e-6,
) -> tuple[jax.Array, Aux]:
  """MAE's masked-patch MSE (He et al., CVPR 2022), FSFM's L_rec.

  e_nl = mean over the patch's values of (pred_nl - t_nl)^2, with t the
  target patch standardised by its own mean and unbiased variance when
  `norm_pix` (MAE's `norm_pix_loss`: (t - mean) / sqrt(var + eps));
  loss = sum_nl mask_nl e_nl / sum_nl mask_nl over the whole batch.

  Args:
    pred: [n, L, P] predicted patches (the pixel decoder's output).
    target: [n, L, P] the image's patches (`patchify`).
    mask: [n, L] bool or float weights: 1 where the patch counts (the
      masked patches; FSFM's L_rec_sfr passes the covered region).
    norm_pix: standardise each target patch.
    eps: added to the variance.
  Returns:
    (float32 scalar loss (0 when the mask is empty), {"patches": mean
    weight per image}).
  """
  if pred.shape != target.shape or mask.shape != pred.shape[:2]:
    raise ValueError(
      f"pred {pred.shape}, target {target.shape} must be [n, L, P] and "
      f"mask {mask.shape} [n, L]"
    )
  pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
  if norm_pix:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True, ddof=1)  # torch's .var()
    target = (target - mean) * jax.lax.rsqrt(var + eps)
  err = jnp.mean(jnp.square(pred - target), axis=-1)  # [n, L]
  w = mask.astype(jnp.float32)
  total = jnp.sum(w)
  loss = jnp.sum(err * w) / jnp.maximum(total, 1e-12)
  return loss, {"patches": total / w.shape[0]}


def negative_cosine(p: jax.Array, z: jax.Array) -> tuple[jax.Array, Aux]:
  """SimSiam's negative cosine (Chen & He, CVPR 2021), FSFM's L_cl.

  loss = -1/2 * mean_i cos(p_i, stop_gradient(z_i)): one direction only,
  as FSFM's `SimSiamLoss` on (online prediction, target projection); the
  target comes from the EMA network and carries no gradient anyway.

  Args:
    p: [b, d] the online network's predictions.
    z: [b, d] the target network's projections of the same images.
  Returns:
    (float32 scalar in [-1/2, 1/2], {"cos": mean cosine}).
  """
  if p.shape != z.shape or p.ndim != 2:
    raise ValueError(f"p {p.shape} and z {z.shape} must be equal [b, d]")
  cos = jnp.sum(
    l2_normalize(p) * l2_normalize(jax.lax.stop_gradient(z)), axis=-1
  )  # [b]
  return -0.5 * cos.mean(), {"cos": cos.mean()}

"""ISR's reliability-guided contrastive loss over mined positive pairs."""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  gather,
  global_mean,
  l2_normalize,
  row_offset,
)

_MASKED = -1e9


def reliability_contrastive(
  z1: jax.Array,
  z2: jax.Array,
  valid: jax.Array,
  *,
  temperature: float = 0.07,
  sigma: float = 0.5,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Contrastive loss whose positive pairs are weighted by their reliability.

  Dou et al., "Identity-Seeking Self-Supervised Representation Learning for
  Generalizable Person Re-identification", ICCV 2023, Sec. 3.3. Positive
  pairs (z1[i], z2[i]) come from maximum-weight bipartite matching between
  the instances of two frames (`idlearn.mining.matching`); some are wrong,
  so each pair's InfoNCE term is weighted by its reliability and reliable
  pairs dominate the gradient:

    s_i  = cos(z1_i, z2_i)                     (the matching similarity)
    w_i  = M * softmax_{i valid}(s_i / sigma)  (mean 1 over the M valid pairs;
                                                 a constant in the gradient)
    l_i  = 1/2 [ -log softmax_j(cos(z1_i, z2_j) / t)_i
               - log softmax_j(cos(z2_i, z1_j) / t)_i ]    (j over valid rows)
    L    = 1/M sum_{i valid} w_i l_i

  Assumption: the abstract fixes only the principle ("reliable positive
  pairs dominate"); the weight is taken as the softmax-normalised matching
  similarity of the pair with temperature sigma, and the negatives are the
  other valid instances of the other frame (both directions). sigma -> inf
  recovers the unweighted symmetric InfoNCE.

  Args:
    z1, z2: [b, d] embeddings; z2[i] is the mined positive of z1[i].
    valid: [b] bool, rows that hold a matched pair (padding and rejected
      matches are False; they are neither anchors nor negatives).
    temperature: InfoNCE temperature t.
    sigma: reliability temperature.
    axis_name: mapped batch axis (negatives gathered across devices), or None.
  Returns:
    (loss, aux) with aux["top1"] (retrieval accuracy of the positive),
    aux["pos_sim"] (mean s_i) and aux["weight_max"] (largest w_i), all over
    the valid pairs of the global batch.
  """
  if z1.ndim != 2 or z1.shape != z2.shape:
    raise ValueError(
      f"z1 and z2 must be [b, d] of one shape, got {z1.shape}, {z2.shape}"
    )
  b = z1.shape[0]
  if valid.shape != (b,):
    raise ValueError(f"valid must have shape ({b},), got {valid.shape}")
  valid = valid.astype(bool)
  z1, z2 = l2_normalize(z1), l2_normalize(z2)
  k1, k2 = gather(z1, axis_name), gather(z2, axis_name)  # [n*b, d]
  key_valid = gather(valid, axis_name)  # [n*b]
  pos = row_offset(b, axis_name) + jnp.arange(b)

  def side(q, keys):
    logits = q @ keys.T / temperature  # [b, n*b]
    # A finite mask keeps rows without any valid key finite (and their
    # gradients zero) instead of NaN.
    logits = jnp.where(key_valid[None, :], logits, _MASKED)
    logp = jax.nn.log_softmax(logits, axis=1)
    nll = -jnp.take_along_axis(logp, pos[:, None], axis=1)[:, 0]
    hit = jnp.argmax(logits, axis=1) == pos
    return jnp.where(valid, nll, 0.0), hit

  nll1, hit1 = side(z1, k2)
  nll2, hit2 = side(z2, k1)
  # Reliability from the pair's own similarity, normalised over the global
  # batch's valid pairs; no gradient through the weights.
  s_all = jax.lax.stop_gradient(jnp.sum(k1 * k2, axis=1))  # [n*b]
  logw = jnp.where(key_valid, s_all / sigma, _MASKED)
  n_valid = jnp.maximum(jnp.sum(key_valid), 1).astype(jnp.float32)
  w_all = n_valid * jax.nn.softmax(logw)
  w = jax.lax.dynamic_slice_in_dim(w_all, row_offset(b, axis_name), b)
  s = jnp.where(valid, s_all[pos], 0.0)
  # Sums over local rows divided by the global count of valid pairs, so
  # that the psum over devices is the global mean.
  n_dev = jax.lax.axis_size(axis_name) if axis_name else 1
  scale = n_dev / n_valid  # pmean(x * n_dev / M) = sum_devices(x) / M
  loss = jnp.sum(jnp.where(valid, w * 0.5 * (nll1 + nll2), 0.0)) * scale
  top1 = jnp.sum(valid * 0.5 * (hit1 + hit2.astype(jnp.float32))) * scale
  pos_sim = jnp.sum(s) * scale
  loss, top1, pos_sim = global_mean((loss, top1, pos_sim), axis_name)
  w_max = jnp.max(jnp.where(key_valid, w_all, 0.0))
  if axis_name is not None:  # equal on all devices; pmax marks it replicated
    w_max = jax.lax.pmax(w_max, axis_name)
  return loss, {"top1": top1, "pos_sim": pos_sim, "weight_max": w_max}

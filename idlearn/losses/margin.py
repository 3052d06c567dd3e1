"""Additive-margin softmax losses on class weights: ArcFace and CosFace.

Both L2-normalise the embeddings and the class weights, so the logits are
`scale * cos(theta_j)` with theta_j the angle between the embedding and class
j's weight; only the target class's logit gets the margin. The class weights
are replicated parameters: with `axis_name` set each device averages its own
rows and the per-device means are averaged (equal local batches), which is
the global mean.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from idlearn.losses._common import (
  Aux,
  check_embeddings,
  check_positive,
  global_mean,
  is_concrete,
  l2_normalize,
)

# sin(theta) = sqrt(1 - cos^2) has an infinite derivative at cos = +-1.
_MIN_SIN_SQ = 1e-12


def _check(emb, class_weights, ids):
  check_embeddings("emb", emb)
  check_embeddings("class_weights", class_weights)
  if class_weights.shape[1] != emb.shape[1]:
    raise ValueError(
      f"class_weights must be [c, d] with d = {emb.shape[1]} as in emb "
      f"{emb.shape}, got class_weights {class_weights.shape}"
    )
  if ids.shape != (emb.shape[0],):
    raise ValueError(
      f"ids must be [b] = ({emb.shape[0]},) for emb {emb.shape}, "
      f"got ids {ids.shape}"
    )
  if is_concrete(ids) and ids.size:
    lo, hi = int(np.min(ids)), int(np.max(ids))
    if lo < 0 or hi >= class_weights.shape[0]:
      raise ValueError(
        f"ids must lie in [0, {class_weights.shape[0]}) for class_weights "
        f"{class_weights.shape}, got values in [{lo}, {hi}]"
      )


def _margin_softmax(
  emb: jax.Array,
  class_weights: jax.Array,
  ids: jax.Array,
  scale: float,
  target_fn: Callable[[jax.Array], jax.Array],
  axis_name: str | None,
) -> tuple[jax.Array, Aux]:
  """Cross-entropy of scale * cos logits with target_fn(cos_y) on the target."""
  _check(emb, class_weights, ids)
  check_positive("scale", scale)
  cos = l2_normalize(emb) @ l2_normalize(class_weights).T  # [b, c]
  is_y = jax.nn.one_hot(ids, cos.shape[1], dtype=bool)  # [b, c]
  cos_y = jnp.sum(jnp.where(is_y, cos, 0.0), axis=1)  # [b]
  target = scale * target_fn(cos_y)  # [b]
  logits = jnp.where(is_y, target[:, None], scale * cos)
  ce = jax.nn.logsumexp(logits, axis=1) - target
  cos_sg = jax.lax.stop_gradient(cos)
  aux = {
    "top1": jnp.mean(jnp.argmax(cos_sg, axis=1) == ids).astype(jnp.float32),
    "target_cos": jnp.mean(jax.lax.stop_gradient(cos_y)),
  }
  loss = global_mean(jnp.mean(ce), axis_name)
  return loss, jax.tree.map(lambda x: global_mean(x, axis_name), aux)


def arcface(
  emb: jax.Array,
  class_weights: jax.Array,
  ids: jax.Array,
  *,
  scale: float = 64.0,
  margin: float = 0.5,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Additive angular margin loss (ArcFace; Deng et al., CVPR 2019).

    l_i = -log( e^{s cos(theta_y + m)} /
                (e^{s cos(theta_y + m)} + sum_{j != y} e^{s cos theta_j}) )
  mean over the batch. cos(theta_y + m) is evaluated exactly as
  cos(theta_y) cos(m) - sin(theta_y) sin(m), also for theta_y + m > pi (no
  "easy margin" or monotonic fallback).

  Args:
    emb: [b, d] embeddings (normalised inside).
    class_weights: [c, d] class centres (normalised inside).
    ids: [b] integer class labels in [0, c).
    scale: s > 0, the logit scale.
    margin: m, additive angle in radians.
    axis_name: mapped axis when emb and ids are split over devices (the class
      weights replicated), or None.
  Returns:
    (loss, aux), aux = {"top1": accuracy of argmax cos, "target_cos": mean
    cos(theta_y)}.
  """
  cos_m, sin_m = jnp.cos(margin), jnp.sin(margin)

  def target(c):
    sin = jnp.sqrt(jnp.maximum(1.0 - c * c, _MIN_SIN_SQ))
    return c * cos_m - sin * sin_m

  return _margin_softmax(emb, class_weights, ids, scale, target, axis_name)


def cosface(
  emb: jax.Array,
  class_weights: jax.Array,
  ids: jax.Array,
  *,
  scale: float = 64.0,
  margin: float = 0.35,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Large margin cosine loss (CosFace; Wang et al., CVPR 2018).

    l_i = -log( e^{s (cos theta_y - m)} /
                (e^{s (cos theta_y - m)} + sum_{j != y} e^{s cos theta_j}) )
  mean over the batch.

  Args:
    emb: [b, d] embeddings (normalised inside).
    class_weights: [c, d] class centres (normalised inside).
    ids: [b] integer class labels in [0, c).
    scale: s > 0.
    margin: m, subtracted from the target cosine.
    axis_name: mapped axis when emb and ids are split over devices, or None.
  Returns:
    (loss, aux) as in `arcface`.
  """
  return _margin_softmax(
    emb, class_weights, ids, scale, lambda c: c - margin, axis_name
  )

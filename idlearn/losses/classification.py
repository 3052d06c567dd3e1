"""Identity classification: label-smoothed softmax cross-entropy."""

import jax
import jax.numpy as jnp
import optax

from idlearn.losses._common import Aux


def identity_ce(
  logits: jax.Array,
  labels: jax.Array,
  *,
  label_smoothing: float = 0.1,
  mask: jax.Array | None = None,
) -> tuple[jax.Array, Aux]:
  """Label-smoothed softmax cross-entropy over identity classes.

  The "bag of tricks" identity loss (Luo et al., 2019): the target is
  (1 - eps) on the true class plus eps / C on every class.

  Args:
    logits: [b, C] class logits (computed in float32).
    labels: [b] int class indices in [0, C) (rows outside `mask` may hold
      anything in range).
    label_smoothing: eps in [0, 1).
    mask: optional bool [b]: the rows that count; the loss is their mean
      (0 when none does).
  Returns:
    (loss, {"ce": loss, "id_acc": top-1 accuracy of the counted rows}).
  """
  logits = logits.astype(jnp.float32)
  if label_smoothing:
    c = logits.shape[-1]
    target = optax.smooth_labels(jax.nn.one_hot(labels, c), label_smoothing)
    per_row = optax.softmax_cross_entropy(logits, target)
  else:
    per_row = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  hit = (logits.argmax(-1) == labels).astype(jnp.float32)
  if mask is None:
    loss, acc = per_row.mean(), hit.mean()
  else:
    m = mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(m), 1.0)
    loss, acc = jnp.sum(per_row * m) / count, jnp.sum(hit * m) / count
  return loss, {"ce": loss, "id_acc": acc}

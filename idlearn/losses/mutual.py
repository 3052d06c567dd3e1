"""Mutual Mean Teaching objectives: soft-margin and soft triplet, soft CE.

Ge et al., "Mutual Mean-Teaching: Pseudo Label Refinery for Unsupervised
Domain Adaptation on Person Re-identification", ICLR 2020, Eqs. 5-9, as the
official code (github.com/yxgeee/MMT, `mmt/loss/{triplet,crossentropy}.py`)
computes them. Distances are Euclidean (not squared) on the embeddings as
given. Batch-hard mining as `losses.triplet`: positives share the anchor's
id (the anchor itself excluded), negatives have another id, and anchors
without a positive or a negative do not count (the official code keeps
them, with the anchor as its own positive at distance 0; P x K batches
have none). With `axis_name`, each device keeps its rows as anchors and
gathers the embeddings and ids of the whole batch.
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  check_embeddings,
  gather,
  global_mean,
  row_offset,
)
from idlearn.losses.metric import _distances


def _hardest(emb, ids, axis_name):
  """Batch-hard mining of the local anchors over the global batch.

  Returns:
    (d [b, N] distances to every row, ap [b] and an [b] indices of the
    hardest positive and negative in the gathered batch, valid [b],
    is_self [b, N]).
  """
  b = emb.shape[0]
  all_emb, all_ids = gather(emb, axis_name), gather(ids, axis_name)
  cols = jnp.arange(all_emb.shape[0])
  is_self = cols[None, :] == (row_offset(b, axis_name) + jnp.arange(b))[:, None]
  same = ids[:, None] == all_ids[None, :]  # [b, N]
  pos, neg = same & ~is_self, ~same
  d = _distances(emb, all_emb, is_self, squared=False)
  d_sg = jax.lax.stop_gradient(d)
  ap = jnp.argmax(jnp.where(pos, d_sg, -jnp.inf), axis=1)
  an = jnp.argmin(jnp.where(neg, d_sg, jnp.inf), axis=1)
  valid = jnp.any(pos, axis=1) & jnp.any(neg, axis=1)
  return d, ap, an, valid, is_self


def _pick(d, idx):
  """d[i, idx[i]] for every row i: [b, N], [b] -> [b]."""
  return jnp.take_along_axis(d, idx[:, None], axis=1)[:, 0]


def _mean_over(x, valid, axis_name):
  """Sum of x over the valid anchors of the global batch / their count."""
  sums = (jnp.sum(jnp.where(valid, x, 0.0)), jnp.sum(valid))
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums[0] / jnp.maximum(sums[1], 1).astype(jnp.float32)


def _check(name, emb, ids):
  check_embeddings(name, emb)
  if ids.shape != (emb.shape[0],):
    raise ValueError(
      f"ids must be [b] = ({emb.shape[0]},) for {name} {emb.shape}, "
      f"got ids {ids.shape}"
    )


def soft_margin_triplet(
  emb: jax.Array, ids: jax.Array, *, axis_name: str | None = None
) -> tuple[jax.Array, Aux]:
  """Batch-hard triplet with a soft margin: softplus(d_ap - d_an).

  MMT's hard-label triplet (Eq. 6; `SoftTripletLoss(margin=0)`): the
  cross-entropy of the 2-way softmax over (d_ap, d_an) with target
  "negative", -log(e^{d_an} / (e^{d_ap} + e^{d_an})) = softplus(d_ap - d_an).

  Args:
    emb: [b, d] embeddings (computed in float32).
    ids: [b] integer (pseudo) identity labels.
    axis_name: mapped axis to gather embeddings and ids over, or None.
  Returns:
    (loss, aux): the mean over anchors with a positive and a negative;
    aux "frac_valid" (such anchors / batch), "frac_ordered" (anchors with
    d_an > d_ap / valid anchors).
  """
  _check("emb", emb, ids)
  emb = emb.astype(jnp.float32)
  d, ap, an, valid, _ = _hardest(emb, ids, axis_name)
  gap = _pick(d, ap) - _pick(d, an)  # [b] d_ap - d_an
  loss = _mean_over(jax.nn.softplus(gap), valid, axis_name)
  ordered = jax.lax.stop_gradient((gap < 0).astype(jnp.float32))
  aux = {
    "frac_valid": global_mean(valid.astype(jnp.float32).mean(), axis_name),
    "frac_ordered": _mean_over(ordered, valid, axis_name),
  }
  return loss, aux


def soft_triplet(
  emb: jax.Array,
  ref: jax.Array,
  ids: jax.Array,
  *,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """MMT's soft triplet: a 2-way distribution over (d_ap, d_an) learned from
  another network's distances at the same indices.

  Eq. 8: for anchor i, p and n are its hardest positive and negative under
  `emb`; the target is T_i = softmax([d'(i, p), d'(i, n)]) with d' the
  distances of `ref` (held constant), and the loss is the cross-entropy
  -sum T_i log softmax([d(i, p), d(i, n)]).

  Args:
    emb: [b, d] the student's embeddings.
    ref: [b, d'] the reference embeddings of the same rows (the other
      network's mean teacher); no gradient flows into them.
    ids: [b] integer (pseudo) identity labels.
    axis_name: mapped axis to gather embeddings and ids over, or None.
  Returns:
    (loss, aux): the mean over anchors with a positive and a negative;
    aux "target_neg" (mean target probability of the negative slot).
  """
  _check("emb", emb, ids)
  _check("ref", ref, ids)
  emb = emb.astype(jnp.float32)
  ref = jax.lax.stop_gradient(ref.astype(jnp.float32))
  d, ap, an, valid, is_self = _hardest(emb, ids, axis_name)
  d_ref = _distances(ref, gather(ref, axis_name), is_self, squared=False)
  logp = jax.nn.log_softmax(jnp.stack([_pick(d, ap), _pick(d, an)], 1))
  target = jax.nn.softmax(jnp.stack([_pick(d_ref, ap), _pick(d_ref, an)], 1))
  loss = _mean_over(-jnp.sum(target * logp, axis=1), valid, axis_name)
  return loss, {"target_neg": _mean_over(target[:, 1], valid, axis_name)}


def soft_cross_entropy(
  logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Cross-entropy against a teacher's softmax (MMT Eq. 7, `SoftEntropy`).

  -sum_c softmax(teacher)_c log softmax(logits)_c, mean over the rows; the
  teacher is held constant.

  Args:
    logits: [b, C] the student's class logits (computed in float32).
    teacher_logits: [b, C] the teacher's logits of the same rows.
    axis_name: mapped axis of the batch (the mean is global), or None.
  Returns:
    (loss, {"agreement": fraction of rows where both argmaxes agree}).
  """
  if logits.ndim != 2 or logits.shape != teacher_logits.shape:
    raise ValueError(
      "logits and teacher_logits must be [b, C] of one shape, got "
      f"{logits.shape} and {teacher_logits.shape}"
    )
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  loss = -jnp.sum(jax.nn.softmax(teacher) * logp, axis=1).mean()
  agree = (logits.argmax(1) == teacher.argmax(1)).astype(jnp.float32).mean()
  return global_mean(loss, axis_name), {
    "agreement": global_mean(agree, axis_name)
  }

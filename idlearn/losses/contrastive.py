"""Contrastive objectives: InfoNCE / NT-Xent, DCL, DCL-W, decoupled softmax.

Similarities are cosines (the embeddings are L2-normalised inside, in
float32, so bfloat16 inputs are fine) divided by a temperature `t`. With
`axis_name` set the loss runs inside `shard_map`: every device keeps its own
rows as anchors and all-gathers the keys, so the value and the gradients equal
the single-device result on the concatenated batch.
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  check_embeddings,
  check_positive,
  check_views,
  gather,
  global_mean,
  global_size,
  l2_normalize,
  row_offset,
)


def _masked_lse(logits: jax.Array, mask: jax.Array):
  """Row-wise log-sum-exp over the entries where `mask` is True.

  Args:
    logits: [r, c] float32.
    mask: [r, c] bool.
  Returns:
    (lse [r], row max [r]); both -inf for a row with no entry, with zero
    (not NaN) gradient there.
  """
  x = jnp.where(mask, logits, -jnp.inf)
  m = jax.lax.stop_gradient(jnp.max(x, axis=1))
  m_safe = jnp.where(jnp.isfinite(m), m, 0.0)
  s = jnp.sum(jnp.exp(x - m_safe[:, None]), axis=1)
  nonempty = s > 0
  lse = jnp.log(jnp.where(nonempty, s, 1.0)) + m_safe
  return jnp.where(nonempty, lse, -jnp.inf), m


def _two_view_logits(z1, z2, temperature, axis_name):
  """Cosine logits of both views' local rows against both views' keys.

  Rows are [z1 local; z2 local] (2b), columns [z1 global; z2 global] (2N):
  one [2b, 2N] matmul holds both directions and all negatives. Only the keys
  are gathered, so each device holds 2b x 2N logits, not (2N)^2.

  Returns:
    logits [2b, 2N] float32, self_col [2b] (the row's own column) and
    pos_col [2b] (the column of the other view of the same sample).
  """
  b = z1.shape[0]
  q = jnp.concatenate([l2_normalize(z1), l2_normalize(z2)])  # [2b, d]
  if axis_name is None:
    keys = q
  else:
    keys = jnp.concatenate(
      [gather(q[:b], axis_name), gather(q[b:], axis_name)]
    )  # [2N, d]
  n = keys.shape[0] // 2
  logits = (q @ keys.T) / temperature
  rows = row_offset(b, axis_name) + jnp.arange(b)
  self_col = jnp.concatenate([rows, rows + n])
  pos_col = jnp.concatenate([rows + n, rows])
  return logits, self_col, pos_col


def _contrastive(z1, z2, temperature, axis_name, *, drop_positive, weights):
  """Shared body of info_nce / dcl / dclw; see their docstrings."""
  logits, self_col, pos_col = _two_view_logits(z1, z2, temperature, axis_name)
  cols = jnp.arange(logits.shape[1])
  is_self = cols[None, :] == self_col[:, None]  # [2b, 2N]
  is_pos = cols[None, :] == pos_col[:, None]
  keep = ~(is_self | is_pos) if drop_positive else ~is_self
  lse, row_max = _masked_lse(logits, keep)  # [2b]
  pos = jnp.sum(jnp.where(is_pos, logits, 0.0), axis=1)  # [2b]
  pos_w = pos if weights is None else weights * pos
  loss = global_mean(jnp.mean(lse - pos_w), axis_name)

  # Diagnostics (cosines): mean positive, mean negative, positive ranked 1st.
  logits, pos = jax.lax.stop_gradient((logits, pos))
  n2 = logits.shape[1]
  neg_sum = jnp.sum(jnp.where(is_self | is_pos, 0.0, logits), axis=1)
  top1 = pos >= row_max if not drop_positive else pos > row_max
  aux = {
    "pos_sim": jnp.mean(pos) * temperature,
    "neg_sim": jnp.mean(neg_sum) / max(n2 - 2, 1) * temperature,
    "top1": jnp.mean(top1.astype(jnp.float32)),
  }
  return loss, jax.tree.map(lambda x: global_mean(x, axis_name), aux)


def _check_pair(z1, z2, temperature, axis_name, min_global):
  check_views(z1, z2)
  check_positive("temperature", temperature)
  n = global_size(z1.shape[0], axis_name)
  if n < min_global:
    raise ValueError(
      f"z1 and z2 of shape {z1.shape} give a global batch of {n} pairs; "
      f"this loss needs at least {min_global}"
    )


def info_nce(
  z1: jax.Array,
  z2: jax.Array,
  *,
  temperature: float = 0.1,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Symmetric InfoNCE / NT-Xent (SimCLR; Chen et al., 2020).

  With s the cosine similarity, t the temperature and N the global batch:
    l_i = -s(z1_i, z2_i)/t
          + log [sum_{k != i} exp(s(z1_i, z1_k)/t) + sum_k exp(s(z1_i, z2_k)/t)]
  i.e. the denominator holds every other sample of both views (2N-1 terms,
  the positive included). The loss is the mean over the 2N anchors of both
  directions (z1 -> z2 and z2 -> z1), i.e. the mean of the two directions.

  Args:
    z1: [b, d] embeddings of view 1 (any float dtype; not normalised).
    z2: [b, d] embeddings of view 2; z2[i] is the positive of z1[i].
    temperature: t > 0.
    axis_name: mapped axis to gather the keys over (inside shard_map), or
      None when z1, z2 hold the whole batch.
  Returns:
    (loss, aux): float32 scalar, and {"pos_sim", "neg_sim", "top1"}: mean
    positive cosine, mean negative cosine, fraction of anchors whose positive
    has the highest similarity, all over the global batch.
  """
  _check_pair(z1, z2, temperature, axis_name, 1)
  return _contrastive(
    z1, z2, temperature, axis_name, drop_positive=False, weights=None
  )


def dcl(
  z1: jax.Array,
  z2: jax.Array,
  *,
  temperature: float = 0.1,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Decoupled contrastive loss (DCL; Yeh et al., 2022, arXiv:2110.06848).

  InfoNCE with the positive pair removed from the denominator (2N-2 terms):
    l_i = -s(z1_i, z2_i)/t
          + log sum_{k != i} [exp(s(z1_i, z1_k)/t) + exp(s(z1_i, z2_k)/t)]
  mean over the 2N anchors of both directions.

  Args:
    z1: [b, d] embeddings of view 1.
    z2: [b, d] embeddings of view 2; z2[i] is the positive of z1[i].
    temperature: t > 0.
    axis_name: mapped axis to gather the keys over, or None.
  Returns:
    (loss, aux) as in `info_nce`; "top1" counts positives above every
    negative.
  Raises:
    ValueError: bad shapes, t <= 0, or a global batch below 2 (no negative).
  """
  _check_pair(z1, z2, temperature, axis_name, 2)
  return _contrastive(
    z1, z2, temperature, axis_name, drop_positive=True, weights=None
  )


def dclw(
  z1: jax.Array,
  z2: jax.Array,
  *,
  temperature: float = 0.1,
  sigma: float = 0.5,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Weighted decoupled contrastive loss (DCL-W; Yeh et al., 2022).

  `dcl` with the positive term of pair i weighted by the negative von
  Mises-Fisher weight
    w_i = 2 - N * softmax_i(s(z1_i, z2_i) / sigma)
  where the softmax runs over the N pairs of the *global* batch (so the
  weights, which average to 1, do not depend on the sharding). The weights
  are constants in the gradient (stop_gradient), as in the paper's code.

  Args:
    z1: [b, d] embeddings of view 1.
    z2: [b, d] embeddings of view 2.
    temperature: t > 0.
    sigma: > 0, temperature of the weighting softmax.
    axis_name: mapped axis to gather the keys over, or None.
  Returns:
    (loss, aux) as in `dcl`, plus "weight_max" (largest |w_i - 1|).
  """
  _check_pair(z1, z2, temperature, axis_name, 2)
  check_positive("sigma", sigma)
  u1, u2 = l2_normalize(z1), l2_normalize(z2)
  c = jax.lax.stop_gradient(jnp.sum(u1 * u2, axis=1)) / sigma  # [b]
  c_all = gather(c, axis_name)  # [N]
  w = 2.0 - c_all.shape[0] * jnp.exp(c - jax.nn.logsumexp(c_all))  # [b]
  loss, aux = _contrastive(
    z1,
    z2,
    temperature,
    axis_name,
    drop_positive=True,
    weights=jnp.concatenate([w, w]),  # same pair weight in both directions
  )
  dev = jnp.max(jnp.abs(w - 1.0))
  if axis_name is not None:
    dev = jax.lax.pmax(dev, axis_name)
  return loss, {**aux, "weight_max": dev}


def decoupled_softmax(
  q: jax.Array,
  k: jax.Array,
  positives: jax.Array,
  *,
  temperature: float = 0.05,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Multi-positive decoupled softmax loss (DEXML; Gupta et al., ICLR 2024).

  For query i with positive keys P_i and negative keys N_i (all others):
    l_ij = -log( exp(s_ij/t) / (exp(s_ij/t) + sum_{k in N_i} exp(s_ik/t)) )
  for each j in P_i: i's other positives are never in the denominator. The
  loss averages l_ij over j in P_i, then over the queries with |P_i| > 0
  (of the global batch; queries without a positive are left out).

  Sharding (axis_name set, e.g. under `shard_loss`): q rows and positives
  rows are local, keys are gathered. `positives` is split by rows like q, so
  each device holds positives[b, M] with the *global* key columns, in the
  order of the concatenated k.

  Args:
    q: [b, d] query embeddings.
    k: [m, d] key embeddings (local rows; M = global number of keys).
    positives: [b, M] bool (or 0/1) mask, positives[i, j] marks key j as a
      positive of query i.
    temperature: t > 0.
    axis_name: mapped axis (q, k, positives all split by rows), or None.
  Returns:
    (loss, aux), aux = {"pos_sim", "neg_sim", "top1", "frac_with_pos"}: mean
    cosine of positive / negative pairs, fraction of queries (with a
    positive) whose nearest key is a positive, fraction of queries with a
    positive.
  """
  check_embeddings("q", q)
  check_embeddings("k", k)
  check_positive("temperature", temperature)
  if q.shape[1] != k.shape[1]:
    raise ValueError(
      f"q and k must have the same dim d, got q {q.shape} and k {k.shape}"
    )
  want = (q.shape[0], global_size(k.shape[0], axis_name))
  if positives.shape != want:
    raise ValueError(
      f"positives must be [b, M] = {want} (local queries x global keys) "
      f"for q {q.shape} and k {k.shape}, got {positives.shape}"
    )
  keys = gather(l2_normalize(k), axis_name)  # [M, d]
  logits = (l2_normalize(q) @ keys.T) / temperature  # [b, M]
  pos = positives.astype(bool)
  neg_lse, neg_max = _masked_lse(logits, ~pos)  # [b]
  # l_ij = log(1 + sum_neg exp(s_ik - s_ij)) = softplus(neg_lse - s_ij).
  nll = jnp.where(pos, jax.nn.softplus(neg_lse[:, None] - logits), 0.0)
  n_pos = jnp.sum(pos, axis=1)  # [b]
  has = n_pos > 0
  per_query = jnp.sum(nll, axis=1) / jnp.maximum(n_pos, 1)
  num, count = jnp.sum(jnp.where(has, per_query, 0.0)), jnp.sum(has)
  if axis_name is not None:
    num, count = jax.lax.psum((num, count), axis_name)
  loss = num / jnp.maximum(count, 1)

  logits = jax.lax.stop_gradient(logits)
  pos_max = jnp.max(jnp.where(pos, logits, -jnp.inf), axis=1)
  cos = logits * temperature
  sums = (
    jnp.sum(jnp.where(pos, cos, 0.0)),
    jnp.sum(pos),
    jnp.sum(jnp.where(pos, 0.0, cos)),
    jnp.sum(~pos),
    jnp.sum(has & (pos_max > neg_max)),
  )
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  ps, pn, ns, nn, hits = sums
  count_f = jnp.maximum(count, 1).astype(jnp.float32)
  aux = {
    "pos_sim": ps / jnp.maximum(pn, 1),
    "neg_sim": ns / jnp.maximum(nn, 1),
    "top1": hits / count_f,
    "frac_with_pos": count / global_size(q.shape[0], axis_name),
  }
  return loss, aux

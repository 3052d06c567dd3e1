"""Hydra / SimLAP: contrastive learning from arbitrary pairs of classes.

Wu et al., "Rethinking Positive Pairs in Contrastive Learning" (arXiv
2410.18200, 2024; later "SimLAP: Simple representation Learning from
Arbitrary Pairs"). Any two classes (y1, y2), even unrelated ones, are a
positive pair inside the subspace that a gate g(y1, y2) in (0, 1)^d picks
out of the embedding; the gate is learned (see idlearn/methods/hydra.py).

The formula follows the author's FastSSL `SimLAP.disparate_loss` (commit
0b99b0c): unit queries and keys, gated logits
  l_ij = <q_i * g_i * g_i, k_j> / t
over the keys of the global batch (all-gathered *with* gradient, as
`concat_all_gather_grad`), positives P_ij = [y_j = y2_i] (every sample of
the paired class), excluded E_ij = [y_j = y1_i] or [y_j = y2_i], negatives
the rest, and the multi-positive InfoNCE of `multipos_ce_loss`:
  L = 1/|P| sum_{(i, j) in P} [log(e^{l_ij} + sum_{n not in E_i} e^{l_in})
                                - l_ij].
The code first centres each row (l - mean_j l_ij); every term is a
difference of logits of one row, so centring changes neither the value nor
the gradient: here the row's negative log-sum-exp is taken stably instead.
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  check_embeddings,
  check_positive,
  gather,
  global_size,
  l2_normalize,
  row_offset,
)
from idlearn.losses.contrastive import _masked_lse

# Gate values are clipped this far from 0 and 1 for the entropy diagnostic.
_GATE_EPS = 1e-6


def _check(q, k, gate, labels, pair_labels):
  check_embeddings("q", q)
  check_embeddings("k", k)
  if k.shape != q.shape or gate.shape != q.shape:
    raise ValueError(
      f"q, k and gate must all be [b, d], got q {q.shape}, k {k.shape}, "
      f"gate {gate.shape}"
    )
  for name, y in (("labels", labels), ("pair_labels", pair_labels)):
    if y.shape != q.shape[:1] or not jnp.issubdtype(y.dtype, jnp.integer):
      raise ValueError(
        f"{name} must be int [b] = [{q.shape[0]}], got {y.dtype} {y.shape}"
      )


def hydra(
  q: jax.Array,
  k: jax.Array,
  gate: jax.Array,
  labels: jax.Array,
  pair_labels: jax.Array,
  *,
  temperature: float = 0.1,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Gated multi-positive InfoNCE of Hydra (SimLAP); see the module doc.

  For query i (class y1_i, paired class y2_i, gate g_i) and the N keys of
  the global batch (classes y_j):
    l_ij = <q_i/|q_i| * g_i * g_i, k_j/|k_j|> / t
    P_i = {j: y_j = y2_i},  N_i = {j: y_j != y1_i and y_j != y2_i}
    L = sum_i sum_{j in P_i} softplus(logsumexp_{n in N_i} l_in - l_ij)
        / sum_i |P_i|
  (softplus(a - b) = log(e^b + e^a) - b: each positive is contrasted alone
  against the negatives). Own-class keys are neither positive nor negative
  unless y2_i = y1_i; then (SupCon) they are all positives, i's own key
  among them (the author's code has no diagonal mask). A query whose paired
  class has no key in the batch adds nothing; with no positive anywhere
  the loss is 0.

  Sharding (axis_name set): q, gate, labels, pair_labels are this device's
  rows; k and labels are gathered (k with its gradient), so the result
  equals the 1-device result on the concatenated batch.

  Args:
    q: [b, d] query embeddings (any float dtype; normalised inside).
    k: [b, d] key embeddings of the same images as q (k = q for one view,
      as the author's vitookit code; another view's, as FastSSL).
    gate: [b, d] the gate g_i of each query's class pair, in (0, 1).
    labels: int [b] class y1 of each row (of q and of k).
    pair_labels: int [b] paired class y2 of each query.
    temperature: t > 0.
    axis_name: mapped axis to gather the keys over, or None.
  Returns:
    (loss, aux): float32 scalar, and float32 scalars over the global batch:
    "pos_sim", "own_sim", "neg_sim" (mean ungated cosine of positive pairs,
    of same-class pairs of different images, of negative pairs),
    "top1" (fraction of queries with a positive whose highest gated logit
    over positives and negatives is a positive), "frac_with_pos",
    "gate_activation" (mean over queries of sum_d g_id) and "gate_entropy"
    (mean Bernoulli entropy of the gate's entries, nats).
  """
  _check(q, k, gate, labels, pair_labels)
  check_positive("temperature", temperature)
  b = q.shape[0]
  qn = l2_normalize(q)  # [b, d]
  keys = gather(l2_normalize(k), axis_name)  # [N, d]
  key_labels = gather(labels, axis_name)  # [N]
  g = gate.astype(jnp.float32)
  logits = ((qn * g * g) @ keys.T) / temperature  # [b, N]

  pos = pair_labels[:, None] == key_labels[None, :]  # [b, N]
  own = labels[:, None] == key_labels[None, :]
  neg = ~(pos | own)
  neg_lse, neg_max = _masked_lse(logits, neg)  # [b]; -inf: no negative
  # log(e^{l_ij} + sum_n e^{l_in}) - l_ij, zero where there is no negative.
  nll = jnp.where(pos, jax.nn.softplus(neg_lse[:, None] - logits), 0.0)
  sums = (jnp.sum(nll), jnp.sum(pos))
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  loss = sums[0] / jnp.maximum(sums[1], 1).astype(jnp.float32)

  # Diagnostics, no gradient.
  logits, g = jax.lax.stop_gradient((logits, g))
  cos = jax.lax.stop_gradient(qn @ keys.T)  # [b, N] ungated
  cols = jnp.arange(keys.shape[0])
  self_col = row_offset(b, axis_name) + jnp.arange(b)
  own_other = own & (cols[None, :] != self_col[:, None])
  has = jnp.any(pos, axis=1)
  pos_max = jnp.max(jnp.where(pos, logits, -jnp.inf), axis=1)
  gc = jnp.clip(g, _GATE_EPS, 1.0 - _GATE_EPS)
  entropy = -(gc * jnp.log(gc) + (1.0 - gc) * jnp.log1p(-gc))
  parts = (
    jnp.sum(jnp.where(pos, cos, 0.0)),
    jnp.sum(pos),
    jnp.sum(jnp.where(own_other, cos, 0.0)),
    jnp.sum(own_other),
    jnp.sum(jnp.where(neg, cos, 0.0)),
    jnp.sum(neg),
    jnp.sum(has & (pos_max > neg_max)),
    jnp.sum(has),
    jnp.sum(g),
    jnp.sum(entropy),
  )
  if axis_name is not None:
    parts = jax.lax.psum(parts, axis_name)
  ps, pn, os_, on, ns, nn, hits, n_has, g_sum, h_sum = parts
  n_rows = global_size(b, axis_name)
  aux = {
    "pos_sim": ps / jnp.maximum(pn, 1),
    "own_sim": os_ / jnp.maximum(on, 1),
    "neg_sim": ns / jnp.maximum(nn, 1),
    "top1": hits / jnp.maximum(n_has, 1),
    "frac_with_pos": n_has / n_rows,
    "gate_activation": g_sum / n_rows,
    "gate_entropy": h_sum / (n_rows * g.shape[1]),
  }
  return loss, {n: v.astype(jnp.float32) for n, v in aux.items()}

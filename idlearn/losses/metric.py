"""Triplet loss with in-batch mining: batch-hard, semi-hard, batch-all.

Distances are Euclidean on the embeddings as given (no normalisation), or
squared Euclidean. With `axis_name` set, every device keeps its own rows as
anchors and all-gathers embeddings *and* ids, so positives and negatives come
from the whole global batch and the result equals the single-device one.
"""

import jax
import jax.numpy as jnp
import numpy as np

from idlearn.losses._common import (
  Aux,
  check_embeddings,
  gather,
  global_size,
  is_concrete,
  row_offset,
)

MININGS = ("batch_hard", "semi_hard", "batch_all")

# Below this squared distance the (non-squared) distance is taken as 0 with
# zero gradient: sqrt has an infinite derivative at 0.
_MIN_SQ_DIST = 1e-12


def _distances(emb, all_emb, is_self, squared):
  """[b, d] x [N, d] -> [b, N] (squared) Euclidean distances, 0 on self."""
  sq = (
    jnp.sum(emb * emb, axis=1)[:, None]
    + jnp.sum(all_emb * all_emb, axis=1)[None, :]
    - 2.0 * (emb @ all_emb.T)
  )
  sq = jnp.where(is_self, 0.0, jnp.maximum(sq, 0.0))
  if squared:
    return sq
  ok = sq > _MIN_SQ_DIST
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1.0)), 0.0)


def _batch_hard(d, pos, neg, margin):
  """Hardest positive vs hardest negative per anchor -> (hinge, valid) [b]."""
  valid = jnp.any(pos, axis=1) & jnp.any(neg, axis=1)
  d_ap = jnp.max(jnp.where(pos, d, -jnp.inf), axis=1)
  d_an = jnp.min(jnp.where(neg, d, jnp.inf), axis=1)
  hinge = jax.nn.relu(
    jnp.where(valid, d_ap, 0.0) - jnp.where(valid, d_an, 0.0) + margin
  )
  return jnp.where(valid, hinge, 0.0), valid


def _semi_hard(d, pos, neg, margin):
  """FaceNet semi-hard mining for every anchor-positive pair.

  For pair (a, p) the negative is the closest one with d_an > d_ap; when none
  is farther than the positive, the farthest negative. O(b N log N) time and
  O(b N) memory (sort + binary search, no [b, N, N] tensor).

  Returns:
    (hinge, valid): [b, N] hinge of each pair, and the pairs that count
    (positive pairs of anchors that have a negative).
  """
  neg_d = jax.lax.stop_gradient(jnp.where(neg, d, jnp.inf))  # [b, N]
  order = jnp.argsort(neg_d, axis=1)
  ascending = jnp.take_along_axis(neg_d, order, axis=1)  # +inf at the end
  n_neg = jnp.sum(neg, axis=1, keepdims=True)  # [b, 1]
  # first rank whose negative distance is > d_ap, for every column p
  rank = jax.vmap(lambda s, v: jnp.searchsorted(s, v, side="right"))(
    ascending, jax.lax.stop_gradient(d)
  )  # [b, N]
  rank = jnp.where(rank < n_neg, rank, jnp.maximum(n_neg - 1, 0))
  d_an = jnp.take_along_axis(
    d, jnp.take_along_axis(order, rank, axis=1), axis=1
  )
  valid = pos & (n_neg > 0)
  hinge = jax.nn.relu(d - d_an + margin)
  return jnp.where(valid, hinge, 0.0), valid


def _batch_all(d, pos, neg, margin):
  """All (a, p, n) triplets -> ([b, N, N] hinge, [b, N, N] valid).

  Memory is b * N^2 per device: meant for the usual P x K batches.
  """
  valid = pos[:, :, None] & neg[:, None, :]
  hinge = jax.nn.relu(d[:, :, None] - d[:, None, :] + margin)
  return jnp.where(valid, hinge, 0.0), valid


def _check_triplet_inputs(emb, ids, mining, margin, axis_name):
  check_embeddings("emb", emb)
  if ids.shape != (emb.shape[0],):
    raise ValueError(
      f"ids must be [b] = ({emb.shape[0]},) for emb {emb.shape}, "
      f"got ids {ids.shape}"
    )
  if mining not in MININGS:
    raise ValueError(f"mining must be one of {MININGS}, got {mining!r}")
  if is_concrete(margin) and float(margin) < 0:
    raise ValueError(f"margin must be >= 0, got {margin}")
  if axis_name is None and is_concrete(ids):
    # Data-dependent check, possible only for concrete ids (eager calls).
    _, counts = np.unique(np.asarray(ids), return_counts=True)
    if counts.max() < 2:
      raise ValueError(
        f"ids of shape {ids.shape} hold no positive pair (every id "
        "appears once): the triplet loss needs >= 2 samples of some identity"
      )
    if counts.size < 2:
      raise ValueError(
        f"ids of shape {ids.shape} hold a single identity: the triplet "
        "loss needs negatives"
      )


def triplet(
  emb: jax.Array,
  ids: jax.Array,
  *,
  margin: float = 0.3,
  mining: str = "batch_hard",
  squared: bool = False,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Triplet margin loss with in-batch mining.

  With D the (squared, if asked) Euclidean distance and [x]_+ = max(x, 0):
  - "batch_hard" (Hermans et al., 2017, arXiv:1703.07737): per anchor a,
    [max_p D(a, p) - min_n D(a, n) + margin]_+, mean over anchors that have
    a positive (and a negative).
  - "semi_hard" (FaceNet; Schroff et al., 2015): per anchor-positive pair,
    n = argmin {D(a, n) : D(a, n) > D(a, p)}, else the farthest negative;
    [D(a, p) - D(a, n) + margin]_+, mean over the pairs.
  - "batch_all" (Hermans et al.): mean of [D(a, p) - D(a, n) + margin]_+
    over the triplets where it is > 0 (0 if none is).
  Positives share the anchor's id (the anchor itself excluded); negatives
  have another id.

  A batch without any positive pair (or with a single id) raises for
  concrete ids. Under jit/shard_map ids are traced and cannot be checked:
  such a batch gives loss 0 (zero gradient) and aux "frac_valid" 0.

  Args:
    emb: [b, d] embeddings (float; computed in float32).
    ids: [b] integer identity labels.
    margin: >= 0.
    mining: "batch_hard", "semi_hard" or "batch_all".
    squared: use squared Euclidean distances.
    axis_name: mapped axis to gather embeddings and ids over, or None.
  Returns:
    (loss, aux), aux = {"frac_active": fraction of counted hinges > 0,
    "frac_valid": fraction of anchors with a positive and a negative,
    "d_pos": mean anchor-positive distance, "d_neg": mean anchor-negative
    distance} over the global batch.
  """
  _check_triplet_inputs(emb, ids, mining, margin, axis_name)
  b = emb.shape[0]
  emb = emb.astype(jnp.float32)
  all_emb, all_ids = gather(emb, axis_name), gather(ids, axis_name)
  cols = jnp.arange(all_emb.shape[0])
  is_self = cols[None, :] == (row_offset(b, axis_name) + jnp.arange(b))[:, None]
  same = ids[:, None] == all_ids[None, :]  # [b, N]
  pos, neg = same & ~is_self, ~same
  d = _distances(emb, all_emb, is_self, squared)

  mine = {"batch_hard": _batch_hard, "semi_hard": _semi_hard}
  hinge, valid = mine.get(mining, _batch_all)(d, pos, neg, margin)
  active = hinge > 0
  # Global sums first, one division at the end: the mean is over the whole
  # batch's counted terms, not a mean of per-device means.
  d_sg = jax.lax.stop_gradient(d)
  sums = {
    "hinge": jnp.sum(hinge),
    "count": jnp.sum(valid),
    "active": jnp.sum(active),
    "anchors": jnp.sum(jnp.any(pos, axis=1) & jnp.any(neg, axis=1)),
    "d_pos": jnp.sum(jnp.where(pos, d_sg, 0.0)),
    "n_pos": jnp.sum(pos),
    "d_neg": jnp.sum(jnp.where(neg, d_sg, 0.0)),
    "n_neg": jnp.sum(neg),
  }
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  denom = sums["active"] if mining == "batch_all" else sums["count"]
  loss = sums["hinge"] / jnp.maximum(denom, 1).astype(jnp.float32)
  frac = lambda x, y: x / jnp.maximum(y, 1).astype(jnp.float32)
  aux = {
    "frac_active": frac(sums["active"], sums["count"]),
    "frac_valid": sums["anchors"] / global_size(b, axis_name),
    "d_pos": frac(sums["d_pos"], sums["n_pos"]),
    "d_neg": frac(sums["d_neg"], sums["n_neg"]),
  }
  return loss, aux

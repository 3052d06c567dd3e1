"""SECLA: symmetry-enhanced contrastive loss for weakly supervised naming."""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  gather,
  l2_normalize,
  row_offset,
)

_MASKED = -1e9


def _check(faces, face_mask, names, name_mask) -> None:
  if faces.ndim != 3 or names.ndim != 3:
    raise ValueError(
      f"faces and names must be [b, m, d] and [b, k, d], got {faces.shape} "
      f"and {names.shape}"
    )
  if faces.shape[0] != names.shape[0] or faces.shape[2] != names.shape[2]:
    raise ValueError(
      f"faces and names must share b and d, got {faces.shape}, {names.shape}"
    )
  if face_mask.shape != faces.shape[:2]:
    raise ValueError(
      f"face_mask must have shape {faces.shape[:2]}, got {face_mask.shape}"
    )
  if name_mask.shape != names.shape[:2]:
    raise ValueError(
      f"name_mask must have shape {names.shape[:2]}, got {name_mask.shape}"
    )


def _direction(q, q_mask, keys, key_mask, pos, temperature):
  """Per-item MIL contrastive term: items of q vs bags of keys.

  q [b, m, d] (local pairs), keys [N, k, d] (all pairs); the score of an
  item for bag j is its best similarity with bag j's valid members.
  Returns (nll [b, m] (0 where masked), hit [b, m]).
  """
  sim = jnp.einsum("imd,jkd->imjk", q, keys)  # [b, m, N, k]
  sim = jnp.where(key_mask[None, None], sim, _MASKED)
  bag = jnp.max(sim, axis=-1) / temperature  # [b, m, N]
  bag = jnp.where(jnp.any(key_mask, axis=1)[None, None], bag, _MASKED)
  logp = jax.nn.log_softmax(bag, axis=-1)
  own = jnp.take_along_axis(logp, pos[:, None, None], axis=-1)[..., 0]
  hit = jnp.argmax(bag, axis=-1) == pos[:, None]
  return jnp.where(q_mask, -own, 0.0), q_mask & hit


def secla(
  faces: jax.Array,
  face_mask: jax.Array,
  names: jax.Array,
  name_mask: jax.Array,
  *,
  temperature: float = 0.07,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Symmetry-enhanced contrastive loss (SECLA), both directions.

  Qu et al., "Weakly Supervised Face Naming with Symmetry-Enhanced
  Contrastive Loss", WACV 2024, Sec. 3. Each image-caption pair i has
  faces F_i and names N_i, with no face-name alignment given. A face's
  score for caption j is its best match among N_j; a name's score for
  image j is its best match among F_j (multiple-instance learning). Both
  directions are contrasted against the other pairs of the batch:

    face -> name: l(f) = -log softmax_j( max_{n in N_j} cos(f, n) / t )_i
    name -> face: l(n) = -log softmax_j( max_{f in F_j} cos(n, f) / t )_i
    L = 1/2 [ mean_faces l(f) + mean_names l(n) ]

  Assumption: the abstract states only the symmetric (both-direction)
  contrastive design; the max-over-bag scores and the batch of other pairs
  as negatives are this implementation's reading of it.

  Args:
    faces: [b, m, d] face embeddings of each image (padded to m).
    face_mask: [b, m] bool, real faces.
    names: [b, k, d] name embeddings of each caption (padded to k).
    name_mask: [b, k] bool, real names.
    temperature: t.
    axis_name: mapped axis of the pairs (keys gathered), or None.
  Returns:
    (loss, aux) with aux["face_top1"] and aux["name_top1"], the fraction of
    faces (names) whose own caption (image) scores highest.
  """
  _check(faces, face_mask, names, name_mask)
  b = faces.shape[0]
  face_mask, name_mask = face_mask.astype(bool), name_mask.astype(bool)
  f, n = l2_normalize(faces), l2_normalize(names)
  all_f, all_n = gather(f, axis_name), gather(n, axis_name)
  all_fm, all_nm = gather(face_mask, axis_name), gather(name_mask, axis_name)
  pos = row_offset(b, axis_name) + jnp.arange(b)
  nll_f, hit_f = _direction(f, face_mask, all_n, all_nm, pos, temperature)
  nll_n, hit_n = _direction(n, name_mask, all_f, all_fm, pos, temperature)
  sums = (
    jnp.sum(nll_f),
    jnp.sum(nll_n),
    jnp.sum(hit_f).astype(jnp.float32),
    jnp.sum(hit_n).astype(jnp.float32),
  )
  counts = (jnp.sum(face_mask), jnp.sum(name_mask))
  if axis_name is not None:
    sums, counts = jax.lax.psum((sums, counts), axis_name)
  nf = jnp.maximum(counts[0], 1).astype(jnp.float32)
  nn = jnp.maximum(counts[1], 1).astype(jnp.float32)
  loss = 0.5 * (sums[0] / nf + sums[1] / nn)
  return loss, {"face_top1": sums[2] / nf, "name_top1": sums[3] / nn}

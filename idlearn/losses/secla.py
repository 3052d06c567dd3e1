"""SECLA: symmetry-enhanced contrastive loss for weakly supervised naming.

Qu, Tuytelaars, Moens, "Weakly Supervised Face Naming with Symmetry-
Enhanced Contrastive Loss", WACV 2023 (arXiv 2210.08957). Follows the
official code (tingyu215/SECLA at c10ed60): `BatchSoftmax(direction=
"agree", agree_type="diag", max_type="normal")` in
models/face_align_model.py for `secla`, `combined_frag_loss` and
`face_contras_loss` (direction "both") in face_align_incre.py for
`secla_bootstrap` (SECLA-B's second stage).

A pair i is an image with a set of faces F_i and a caption with a set of
names N_i; which face is which name is not given. The score of a set X
against a set Y is the mean over x in X of the best dot product with Y:

  s(X, Y) = 1/|X| sum_{x in X} max_{y in Y} <x, y>

(raw dot products: the official loss neither L2-normalises nor scales by
a temperature). Deviation: the official code zero-pads the sets of a
batch, so that padded faces and names score 0 inside the max and count
in the 1/|X| normaliser; here padding is masked out of both (a padded
slot never wins the max, the mean is over the real members only).
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import Aux, gather, row_offset

DIRECTIONS = ("both", "face_to_name", "name_to_face")
# A masked similarity: never the max of a set with one real member. Finite,
# so that masked entries carry zero (not NaN) gradients.
_MASKED = -1e9


def _check_set(names: tuple[str, str], x: jax.Array, mask: jax.Array) -> None:
  """names: (the sets' argument, their mask's)."""
  if x.ndim != 3:
    raise ValueError(f"{names[0]} must be [b, m, d] sets, got shape {x.shape}")
  if mask.shape != x.shape[:2]:
    raise ValueError(
      f"{names[1]} must have shape {x.shape[:2]} (the sets' [b, m]), got "
      f"{mask.shape}"
    )


def _check_pair(names, a, b) -> None:
  """Both sets of one pair share b and d."""
  if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
    raise ValueError(
      f"{names[0]} {a.shape} and {names[1]} {b.shape} must share the "
      "batch b and the width d"
    )


def _set_scores(q, q_mask, keys, key_mask) -> jax.Array:
  """s(Q_i, K_k) for every local set i and every (gathered) set k.

  q [b, m, d], q_mask [b, m]; keys [n, k, d], key_mask [n, k] ->
  float32 [b, n] (0 where Q_i or K_k has no member).
  """
  sim = jnp.einsum("imd,jkd->imjk", q, keys)  # [b, m, n, k]
  best = jnp.max(jnp.where(key_mask[None, None], sim, _MASKED), axis=-1)
  ok = q_mask[:, :, None] & jnp.any(key_mask, axis=1)[None, None]
  total = jnp.sum(jnp.where(ok, best, 0.0), axis=1)  # [b, n]
  count = jnp.maximum(jnp.sum(q_mask, axis=1), 1).astype(jnp.float32)
  return total / count[:, None]


def _own_scores(q, q_mask, keys, key_mask) -> jax.Array:
  """s(Q_i, K_i) of each local pair: [b, m, d], [b, k, d] -> [b]."""
  sim = jnp.einsum("imd,ikd->imk", q, keys)  # [b, m, k]
  best = jnp.max(jnp.where(key_mask[:, None], sim, _MASKED), axis=-1)
  ok = q_mask & jnp.any(key_mask, axis=1)[:, None]
  count = jnp.maximum(jnp.sum(q_mask, axis=1), 1).astype(jnp.float32)
  return jnp.sum(jnp.where(ok, best, 0.0), axis=1) / count


def _batch_ce(scores, pos, row_ok, col_ok):
  """Cross-entropy of each row over the batch's pairs, target its own.

  scores [b, n] (local rows, all pairs as columns); pos [b] the own
  column; row_ok [b], col_ok [n]: pairs that take part. Returns (sum of
  the rows' losses, number of rows whose own pair scores highest), over
  the rows that take part.
  """
  logits = jnp.where(col_ok[None], scores, _MASKED)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, pos[:, None], axis=-1)[:, 0]
  hit = jnp.argmax(logits, axis=-1) == pos
  return (
    jnp.sum(jnp.where(row_ok, nll, 0.0)),
    jnp.sum(row_ok & hit).astype(jnp.float32),
  )


def _mean_over_rows(sums, rows, axis_name):
  """Sums (local) / rows taking part (global), psum'd when sharded."""
  count = jnp.sum(rows).astype(jnp.float32)
  if axis_name is not None:
    sums, count = jax.lax.psum((sums, count), axis_name)
  return jax.tree.map(lambda s: s / jnp.maximum(count, 1.0), sums)


def secla(
  faces: jax.Array,
  face_mask: jax.Array,
  names: jax.Array,
  name_mask: jax.Array,
  *,
  alpha: float = 0.15,
  directions: str = "both",
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """SECLA: both directions contrasted over the batch, plus agreement.

  With s^NF_ik = s(N_i, F_k) (each name of caption i against image k's
  faces) and s^FN_ik = s(F_i, N_k) (each face of image i against caption
  k's names), over the B pairs of the (global) batch:

    L = CE_i(s^NF_i., i) + CE_i(s^FN_i., i)
        + alpha * mean_i (s^NF_ii - s^FN_ii)^2

  each term a mean over the pairs i (official `direction="agree"`,
  `agree_type="diag"`, alpha 0.15). `directions="face_to_name"` keeps the
  CE of s^FN only (the official `direction="name"`: each image picks its
  caption), `"name_to_face"` that of s^NF only (official "face"); the
  agreement term is added whenever alpha > 0. A pair without a real face
  or name takes no part (neither as a row nor as a candidate).

  Args:
    faces: [b, m, d] embeddings of each image's faces (padded to m).
    face_mask: bool [b, m], real faces.
    names: [b, k, d] embeddings of each caption's names (padded to k).
    name_mask: bool [b, k], real names.
    alpha: weight of the agreement term.
    directions: "both", "face_to_name" or "name_to_face".
    axis_name: mapped axis of the pairs (keys gathered), or None.
  Returns:
    (loss, aux): aux holds each term ("ce_name_to_face",
    "ce_face_to_name", "agreement", unweighted) and the fraction of pairs
    whose own caption / image scores highest ("top1_name_to_face",
    "top1_face_to_name").
  """
  _check_set(("faces", "face_mask"), faces, face_mask)
  _check_set(("names", "name_mask"), names, name_mask)
  _check_pair(("faces", "names"), faces, names)
  if directions not in DIRECTIONS:
    raise ValueError(f"directions={directions!r}: one of {DIRECTIONS}")
  faces, names = faces.astype(jnp.float32), names.astype(jnp.float32)
  face_mask, name_mask = face_mask.astype(bool), name_mask.astype(bool)
  b = faces.shape[0]
  ok = jnp.any(face_mask, axis=1) & jnp.any(name_mask, axis=1)  # [b]
  all_f, all_fm = gather(faces, axis_name), gather(face_mask, axis_name)
  all_n, all_nm = gather(names, axis_name), gather(name_mask, axis_name)
  all_ok = gather(ok, axis_name)
  pos = row_offset(b, axis_name) + jnp.arange(b)
  s_nf = _set_scores(names, name_mask, all_f, all_fm)  # [b, n]
  s_fn = _set_scores(faces, face_mask, all_n, all_nm)
  ce_nf, top_nf = _batch_ce(s_nf, pos, ok, all_ok)
  ce_fn, top_fn = _batch_ce(s_fn, pos, ok, all_ok)
  own_nf = jnp.take_along_axis(s_nf, pos[:, None], axis=1)[:, 0]
  own_fn = jnp.take_along_axis(s_fn, pos[:, None], axis=1)[:, 0]
  agree = jnp.sum(jnp.where(ok, (own_nf - own_fn) ** 2, 0.0))
  m = _mean_over_rows((ce_nf, ce_fn, agree, top_nf, top_fn), ok, axis_name)
  ce_nf, ce_fn, agree, top_nf, top_fn = m
  loss = alpha * agree if alpha else jnp.zeros((), jnp.float32)
  if directions in ("both", "name_to_face"):
    loss = loss + ce_nf
  if directions in ("both", "face_to_name"):
    loss = loss + ce_fn
  return loss, {
    "ce_name_to_face": ce_nf,
    "ce_face_to_name": ce_fn,
    "agreement": agree,
    "top1_name_to_face": top_nf,
    "top1_face_to_name": top_fn,
  }


def secla_bootstrap(
  matched_faces: jax.Array,
  added_faces: jax.Array,
  names: jax.Array,
  mask: jax.Array,
  *,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """SECLA-B's terms on the faces matched to known names (stage 2).

  Slot j of pair i holds a name N_ij, the face M_ij the current model
  matched to it and an added face A_ij: another face of that name from
  the easy (one face, one name) pairs. With s as in `secla` over the
  slots in `mask`:

    combined (official `combined_frag_loss`, direction "both"):
      CE_i over k of s(N_i, M_i if k == i else A_k)
      + CE_i over k of s(M_i if k == i else A_i, N_k)
    face (official `face_contras_loss`, the anti-forgetting term):
      CE_i over k of s(M_i, A_k) + CE_i over k of s(A_i, M_k)

  each a mean over the pairs with at least one slot; loss = combined +
  face. (The official code also puts a null face in the matched and
  added sets and NONAME among the names: pass them as a slot.)

  Args:
    matched_faces: [b, m, d] the face matched to each slot's name.
    added_faces: [b, m, d] another face of each slot's name.
    names: [b, m, d] the slots' name embeddings.
    mask: bool [b, m], the slots in use.
    axis_name: mapped axis of the pairs (keys gathered), or None.
  Returns:
    (loss, {"combined": ..., "face": ...}).
  """
  _check_set(("matched_faces", "mask"), matched_faces, mask)
  if not matched_faces.shape == added_faces.shape == names.shape:
    raise ValueError(
      "matched_faces, added_faces and names must have one shape [b, m, d], "
      f"got {matched_faces.shape}, {added_faces.shape}, {names.shape}"
    )
  mf, af = matched_faces.astype(jnp.float32), added_faces.astype(jnp.float32)
  nm = names.astype(jnp.float32)
  mask = mask.astype(bool)
  b = mf.shape[0]
  ok = jnp.any(mask, axis=1)
  all_m, all_a = gather(mf, axis_name), gather(af, axis_name)
  all_n, all_mask = gather(nm, axis_name), gather(mask, axis_name)
  all_ok = gather(ok, axis_name)
  pos = row_offset(b, axis_name) + jnp.arange(b)
  own = jnp.arange(all_ok.shape[0])[None] == pos[:, None]  # [b, n]

  def ce(scores):
    return _batch_ce(scores, pos, ok, all_ok)[0]

  name_rows = jnp.where(
    own, _own_scores(nm, mask, mf, mask)[:, None],
    _set_scores(nm, mask, all_a, all_mask),
  )  # fmt: skip
  face_rows = jnp.where(
    own, _own_scores(mf, mask, nm, mask)[:, None],
    _set_scores(af, mask, all_n, all_mask),
  )  # fmt: skip
  combined = ce(name_rows) + ce(face_rows)
  face = ce(_set_scores(mf, mask, all_a, all_mask)) + ce(
    _set_scores(af, mask, all_m, all_mask)
  )
  combined, face = _mean_over_rows((combined, face), ok, axis_name)
  return combined + face, {"combined": combined, "face": face}

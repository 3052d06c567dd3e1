"""CRFR-P masking (FSFM, Wang et al., CVPR 2025): Covering a Random Facial
Region, then Proportional masking of the others.

The official code (wolo-wolo/FSFM-CVPR25, `fsfm-3c/util/datasets.py`,
`collate_fn_crfrp`) reads a face-parsing map of every image (FACER, 11
labels). For each batch it picks one of six facial-region groups (eyebrows,
eyes, nose, mouth, face boundary, hair; never skin or background) and masks
every patch of it (S); the rest of the budget, 0.75 L patches, is spread
over the other groups in proportion to their size; a last random
mask/unmask (never unmasking S) makes the count exact. If S alone exceeds
the budget, random patches of S are unmasked down to it and S becomes the
mask. A patch belongs to a group if any of its pixels has one of the
group's labels; "face boundary" is the patches holding skin and hair or
background.

Here (assumption, not the official code): we have no parsing maps, so
`face_layout` paints one fixed label template for the roughly aligned AT&T
crops (112x92, face centred, eyes about 45% down) and every image uses it;
the groups and the procedure are the official ones (`crfrp_masks`, a
jittable function of a PRNG key with a static number of masked patches).
"""

import jax
import jax.numpy as jnp
import numpy as np

# The region groups in the official order: the first CANDIDATES may be the
# fully covered one.
REGIONS = (
  "eyebrows",
  "eyes",
  "nose",
  "mouth",
  "face_boundary",
  "hair",
  "skin",
  "background",
)
CANDIDATES = 6

# Pixel labels of the template (FACER's, grouped: both brows, both eyes,
# all mouth parts share one label here).
_BG, _SKIN, _BROWS, _EYES, _NOSE, _MOUTH, _HAIR = 0, 1, 2, 4, 6, 7, 10

# The template in fractions of the crop (y down, x right), read off the mean
# of the s1-s28 training crops and a dozen single crops on a 12 x 10 patch
# grid: the face oval spans x 0.13-0.87 and y 0.17-0.98 (hairline to chin);
# hair caps the head above y 0.55; brows sit at y 0.36-0.44, eyes at
# 0.44-0.53 (x 0.22-0.40 and 0.60-0.78), the nose at y 0.50-0.72 (x
# 0.42-0.58), the mouth at y 0.73-0.84 (x 0.32-0.68). Boxes are generous:
# the crops are aligned only roughly (pose, glasses, smiles shift them by
# about half a patch).
_FACE = (0.575, 0.5, 0.405, 0.37)  # ellipse: centre y, x; radius y, x
_HEAD = (0.5, 0.5, 0.5, 0.46)
_HAIR_BELOW = 0.55  # no hair under this height (ears, neck: background)
_BOXES = (  # (label, y0, y1, x0, x1), painted over the skin in this order
  (_BROWS, 0.36, 0.44, 0.22, 0.40),
  (_BROWS, 0.36, 0.44, 0.60, 0.78),
  (_EYES, 0.44, 0.53, 0.22, 0.40),
  (_EYES, 0.44, 0.53, 0.60, 0.78),
  (_NOSE, 0.50, 0.72, 0.42, 0.58),
  (_MOUTH, 0.73, 0.84, 0.32, 0.68),
)


def face_template(image_size: tuple[int, int]) -> np.ndarray:
  """The fixed parsing map of a roughly aligned AT&T face crop.

  Args:
    image_size: (h, w) in pixels.
  Returns:
    int32 [h, w] labels: 0 background, 1 skin, 2 brows, 4 eyes, 6 nose,
    7 mouth, 10 hair (FACER's numbering).
  """
  h, w = image_size
  y = (np.arange(h)[:, None] + 0.5) / h
  x = (np.arange(w)[None, :] + 0.5) / w

  def inside(cy, cx, ry, rx):
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0

  labels = np.full((h, w), _BG, np.int32)
  labels[inside(*_HEAD) & (y < _HAIR_BELOW)] = _HAIR
  labels[inside(*_FACE)] = _SKIN
  for label, y0, y1, x0, x1 in _BOXES:
    labels[(y >= y0) & (y < y1) & (x >= x0) & (x < x1)] = label
  return labels


def region_patches(labels: np.ndarray, patch: int) -> np.ndarray:
  """The official region groups on the patch grid of a parsing map.

  Args:
    labels: int [h, w] parsing map (FACER labels), h and w multiples of
      `patch`.
    patch: patch side in pixels.
  Returns:
    bool [len(REGIONS), L] (L = (h / patch) * (w / patch), row-major):
    patch l is in a group if any of its pixels has a label of the group;
    face boundary: it holds skin and (hair or background).
  """
  h, w = labels.shape
  if h % patch or w % patch:
    raise ValueError(f"parsing map {labels.shape} not divisible by {patch}")
  cells = labels.reshape(h // patch, patch, w // patch, patch)

  def has(*values):  # [gh, gw]: any pixel of the patch has one of values
    return np.isin(cells, values).any(axis=(1, 3))

  groups = {
    "eyebrows": has(2, 3),
    "eyes": has(4, 5),
    "nose": has(6),
    "mouth": has(7, 8, 9),
    "face_boundary": has(1) & has(10, 0),
    "hair": has(10),
    "skin": has(1),
    "background": has(0),
  }
  return np.stack([groups[r].reshape(-1) for r in REGIONS])


def face_layout(image_size: tuple[int, int], patch: int) -> np.ndarray:
  """bool [len(REGIONS), L]: `region_patches` of `face_template`."""
  return region_patches(face_template(image_size), patch)


def num_masked(num_patches: int, mask_ratio: float) -> int:
  """floor(mask_ratio * L): the masked patches of every image.

  The official code truncates `0.75 L - count` once more at its last
  correction; the two agree whenever 0.75 L is whole (L = 196 at 224/16).
  """
  return int(np.floor(mask_ratio * num_patches + 1e-9))


def _pick(scores: jax.Array, pool: jax.Array, k: jax.Array) -> jax.Array:
  """bool [L]: the k entries of `pool` with the lowest scores (k <= |pool|).

  A uniformly random k-subset of the pool for i.i.d. uniform scores. Ties
  (float32 draws repeat often enough over a run) go to the lower index, so
  that exactly k are picked.
  """
  idx = jnp.arange(scores.shape[0])
  lower = (scores[None, :] < scores[:, None]) | (
    (scores[None, :] == scores[:, None]) & (idx[None, :] < idx[:, None])
  )  # [L, L]: entry q comes before entry p
  return pool & ((pool[None, :] & lower).sum(axis=1) < k)


def _one_image(key, regions, chosen, budget):
  """CRFR-P for one image; see `crfrp_masks`. Returns (mask, region)."""
  g, length = regions.shape
  u_prop, u_fix = jax.random.uniform(key, (2, length))
  covered = regions[chosen]  # [L] S: the fully masked region
  size = covered.sum()
  short = budget - size  # patches still to mask outside S
  ratio = short / jnp.maximum(length - size, 1)
  # Proportional step: each other group, in the official order, masks
  # round(ratio * its patches not seen in an earlier group) of them.
  mask, seen = covered, covered
  for j in range(g):
    fresh = regions[j] & ~seen & (j != chosen)  # [L]
    seen = seen | fresh
    quota = jnp.round(fresh.sum() * ratio).astype(jnp.int32)
    mask = mask | _pick(u_prop, fresh, quota)
  # Exact count: mask unmasked patches, or unmask masked ones outside S.
  extra = budget - mask.sum()
  pool = jnp.where(extra > 0, ~mask, mask & ~covered)
  mask = mask ^ _pick(u_fix, pool, jnp.abs(extra))
  # |S| >= budget: unmask random patches of S down to the budget; S = mask.
  over = short <= 0
  trimmed = covered & ~_pick(u_fix, covered, -short)
  mask = jnp.where(over, trimmed, mask)
  return mask, jnp.where(over, trimmed, covered)


def crfrp_masks(
  key: jax.Array,
  regions: jax.Array,
  batch_size: int,
  *,
  mask_ratio: float = 0.75,
  candidates: int = CANDIDATES,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """CRFR-P masks of a batch (one region drawn per batch, as officially).

  Args:
    key: PRNG key.
    regions: bool [G, L] region groups of the layout shared by the batch
      (`face_layout`), or [batch_size, G, L] one per image.
    batch_size: b.
    mask_ratio: masked fraction; every image masks exactly
      `num_masked(L, mask_ratio)` patches.
    candidates: the first `candidates` groups may be the covered one.
  Returns:
    (mask bool [b, L] (True: masked), region bool [b, L] (the covered
    region S, all masked; the mask itself when S exceeded the budget),
    chosen int32 [] (index into REGIONS)).
  """
  regions = jnp.asarray(regions, bool)
  if regions.ndim == 2:
    regions = jnp.broadcast_to(regions, (batch_size, *regions.shape))
  budget = num_masked(regions.shape[-1], mask_ratio)
  k_region, k_images = jax.random.split(key)
  chosen = jax.random.randint(k_region, (), 0, candidates)
  keys = jax.random.split(k_images, batch_size)
  mask, region = jax.vmap(lambda k, r: _one_image(k, r, chosen, budget))(
    keys, regions
  )
  return mask, region, chosen


def visible_indices(mask: jax.Array, num_visible: int) -> jax.Array:
  """int32 [b, num_visible] ascending indices of the unmasked patches.

  Args:
    mask: bool [b, L] with exactly L - num_visible True in every row.
    num_visible: the static count of unmasked patches.
  """
  order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True)
  return order[:, :num_visible].astype(jnp.int32)

"""CRFR-P masks (FSFM): the fixed AT&T face layout, the exact masked count,
the fully covered region, the proportional split (official formula in
NumPy), the case of a region larger than the budget."""

import jax
import numpy as np
import pytest

from idlearn.mining import fsfm_masks as fm

LAYOUT = fm.face_layout((80, 64), 8)  # [8 groups, 10 x 8 patches]
B = 16


@pytest.fixture(scope="module")
def crfrp():
  return jax.jit(
    fm.crfrp_masks, static_argnums=(2,), static_argnames="mask_ratio"
  )


def _quotas(regions, chosen, budget):
  """Official `variable_proportional_masking` counts (float64): the
  patches each other group masks before the final correction."""
  covered = regions[chosen]
  ratio = (budget - covered.sum()) / (regions.shape[1] - covered.sum())
  seen, out = covered.copy(), {}
  for j in range(len(regions)):
    if j == chosen:
      continue
    fresh = regions[j] & ~seen
    seen |= fresh
    out[j] = (fresh, int(np.round(fresh.sum() * ratio)))
  return out


def test_layout_covers_every_patch_and_is_mirror_symmetric():
  gh, gw = 10, 8
  assert LAYOUT.shape == (len(fm.REGIONS), gh * gw)
  assert LAYOUT.any(axis=0).all()  # every patch has a group
  mirrored = LAYOUT.reshape(-1, gh, gw)[:, :, ::-1].reshape(LAYOUT.shape)
  np.testing.assert_array_equal(mirrored, LAYOUT)  # flips keep it aligned
  grid = dict(zip(fm.REGIONS, LAYOUT.reshape(-1, gh, gw), strict=True))
  rows = lambda r: sorted(set(np.nonzero(grid[r])[0]))
  # top to bottom: hair, brows, eyes, nose, mouth; brows, eyes and nose off
  # the background (mouth corners may reach the jaw on this coarse grid)
  assert rows("hair")[0] == 0 and rows("mouth")[-1] <= 9
  assert rows("eyebrows")[0] < rows("eyes")[-1] < rows("mouth")[0]
  assert rows("eyes")[0] <= rows("nose")[0] < rows("mouth")[-1]
  for r in ("eyebrows", "eyes", "nose"):
    assert not (grid[r] & grid["background"]).any(), r
  assert (grid["face_boundary"] & grid["skin"]).sum() == grid[
    "face_boundary"
  ].sum()


def test_exact_count_covered_region_and_proportional_split(crfrp):
  budget = fm.num_masked(LAYOUT.shape[1], 0.75)
  assert budget == 60
  seen_regions = set()
  for seed in range(12):
    mask, region, chosen = map(
      np.asarray, crfrp(jax.random.key(seed), LAYOUT, B)
    )
    c = int(chosen)
    seen_regions.add(c)
    assert c < fm.CANDIDATES  # never skin or background
    assert mask.shape == region.shape == (B, LAYOUT.shape[1])
    np.testing.assert_array_equal(mask.sum(1), budget)  # exact, each image
    np.testing.assert_array_equal(region, np.broadcast_to(LAYOUT[c], (B, 80)))
    assert not (region & ~mask).any()  # the region is fully masked
    quotas = _quotas(LAYOUT, c, budget)
    correction = budget - LAYOUT[c].sum() - sum(q for _, q in quotas.values())
    for row in mask:
      got = {j: int((row & fresh).sum()) for j, (fresh, _) in quotas.items()}
      off = {j: got[j] - q for j, (_, q) in quotas.items()}
      # the last correction moves |correction| patches, one way only
      assert sum(abs(v) for v in off.values()) == abs(correction)
      assert all(v * correction >= 0 for v in off.values())
    assert len({row.tobytes() for row in mask}) > B // 2  # per-image draws
  assert len(seen_regions) >= 4


def test_proportions_average_to_the_ratio(crfrp):
  mask, _, chosen = crfrp(jax.random.key(7), LAYOUT, 512)
  mask, c = np.asarray(mask), int(chosen)
  ratio = (60 - LAYOUT[c].sum()) / (80 - LAYOUT[c].sum())
  for j, (fresh, _) in _quotas(LAYOUT, c, 60).items():
    if fresh.sum() >= 4:
      frac = mask[:, fresh].mean()
      assert abs(frac - ratio) < 0.1, (fm.REGIONS[j], frac, ratio)
    # within a group every patch is as likely as the others
    if fresh.sum() >= 2:
      per_patch = mask[:, fresh].mean(0)
      assert per_patch.max() - per_patch.min() < 0.2, fm.REGIONS[j]


def test_region_larger_than_the_budget_is_trimmed_and_becomes_the_mask():
  regions = np.zeros((len(fm.REGIONS), 16), bool)
  regions[0, :14] = True  # 14 > budget 12
  regions[7, 14:] = True
  mask, region, chosen = jax.jit(
    lambda k: fm.crfrp_masks(k, regions, 8, candidates=1)
  )(jax.random.key(0))
  mask, region = np.asarray(mask), np.asarray(region)
  assert int(chosen) == 0
  np.testing.assert_array_equal(mask.sum(1), 12)
  assert not mask[:, 14:].any()
  np.testing.assert_array_equal(region, mask)


def test_per_image_layouts_and_visible_indices():
  rng = np.random.default_rng(0)
  regions = rng.random((4, len(fm.REGIONS), 20)) < 0.3
  regions[:, 6] = True  # skin everywhere: every patch has a group
  mask, region, _ = fm.crfrp_masks(jax.random.key(1), regions, 4)
  mask = np.asarray(mask)
  np.testing.assert_array_equal(mask.sum(1), 15)
  assert not (np.asarray(region) & ~mask).any()
  keep = np.asarray(fm.visible_indices(mask, 5))
  assert keep.shape == (4, 5) and (np.diff(keep, axis=1) > 0).all()
  for row, k in zip(mask, keep, strict=True):
    np.testing.assert_array_equal(np.nonzero(~row)[0], k)

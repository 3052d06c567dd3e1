"""Cross-camera pair mining over the training split, and its batches."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import data
from idlearn.data import sources
from idlearn.training import inputs, objectives, pair_mining, sharding


def test_mined_partners_are_the_best_cross_camera_matching():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(8, 4))
  cams = np.array([0, 1, 0, 1, 2, 0, 1, 2])
  for centring in (False, True):
    partner, score = pair_mining.mine_cross_camera_pairs(
      feats, cams, camera_centering=centring
    )
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    if centring:
      for c in np.unique(cams):
        unit[cams == c] -= unit[cams == c].mean(0)
      unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    for c in np.unique(cams):
      rows, cols = np.flatnonzero(cams == c), np.flatnonzero(cams != c)
      sim = unit[rows] @ unit[cols].T
      best = max(
        itertools.permutations(range(len(cols)), len(rows)),
        key=lambda p, sim=sim: sum(sim[i, j] for i, j in enumerate(p)),
      )
      np.testing.assert_array_equal(partner[rows], cols[list(best)])
      np.testing.assert_allclose(
        score[rows], sim[np.arange(len(rows)), list(best)], rtol=1e-6
      )
  assert (cams[partner] != cams).all()
  partner, _ = pair_mining.mine_cross_camera_pairs(
    feats, cams, min_similarity=0.99
  )
  assert (partner == -1).any()
  full, full_score = pair_mining.mine_cross_camera_pairs(feats, cams)
  half, _ = pair_mining.mine_cross_camera_pairs(feats, cams, keep_fraction=0.5)
  kept = np.flatnonzero(half >= 0)
  np.testing.assert_array_equal(kept, np.sort(np.argsort(-full_score)[:4]))
  np.testing.assert_array_equal(half[kept], full[kept])


def test_pairs_sampler_and_views_from_the_pair(data_dir, built):
  meta = sources.split_meta(built("pku_reid"), "train")
  pairs = np.stack([np.arange(40), np.arange(40)[::-1] + 100], 1)
  ds = data.make_train_loader(
    name="pku_reid", split="train", image_size=(32, 16),
    global_batch_size=8, sampler="pairs", pairs=pairs, data_dir=data_dir,
  )  # fmt: skip
  batches = [b for b, _ in zip(ds, range(5), strict=False)]
  got = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(np.sort(got[:, 0]), np.arange(40))
  for row in got:  # every row is one of the given pairs
    assert tuple(row) in {tuple(p) for p in pairs}
  np.testing.assert_array_equal(
    batches[0]["pair_id"], meta["id"][batches[0]["index"]]
  )
  with pytest.raises(ValueError, match="pairs"):
    data.make_train_loader(
      name="pku_reid", split="train", image_size=(32, 16),
      global_batch_size=8, sampler="pairs", data_dir=data_dir,
    )  # fmt: skip
  # view i reads image i of the pair unless its spec names a frame
  views_fn = inputs.make_views_fn(
    {"a": {}, "b": {"flip": 0.0}, "c": {"frame": 0}}
  )
  x = np.asarray(batches[0]["image"])
  va, vb, vc = views_fn(jax.random.key(0), x)
  from idlearn import augment

  np.testing.assert_allclose(va, augment.preprocess(x[:, 0], (32, 16)))
  np.testing.assert_allclose(vb, augment.preprocess(x[:, 1], (32, 16)))
  np.testing.assert_allclose(vc, va)


def test_given_pairs_objective_adds_the_instance_term():
  rng = np.random.default_rng(1)
  z = [jnp.asarray(rng.normal(size=(16, 6)), jnp.float32) for _ in range(3)]
  from idlearn import losses

  mesh = sharding.make_data_mesh()
  obj = objectives.make_objective(
    {
      "name": "isr",
      "matching": "given",
      "pair_views": (0, 2),
      "instance_weight": 0.5,
      "temperature": 0.2,
    },
    mesh,
  )
  outs = [{"proj": v} for v in z]
  ids = np.stack([np.arange(16), np.arange(16) % 4], 1).astype(np.int32)
  got, aux = jax.jit(lambda o, b: obj(o, b))(outs, {"pair_id": ids})
  pair, _ = losses.reliability_contrastive(
    z[0], z[2], jnp.ones(16, bool), temperature=0.2, sigma=0.5
  )
  inst, _ = losses.info_nce(z[0], z[1], temperature=0.2)
  np.testing.assert_allclose(got, pair + 0.5 * inst, rtol=1e-5)
  np.testing.assert_allclose(aux["match_acc"], np.mean(ids[:, 1] == ids[:, 0]))

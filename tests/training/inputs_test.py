"""The run's inputs: views by role (counts, pair frames, random streams)."""

import jax
import numpy as np
import pytest

from idlearn import augment, data
from idlearn.data import sources
from idlearn.training import inputs


def test_views_by_role_in_name_order_each_with_its_own_stream():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 255, size=(4, 16, 8, 3), dtype=np.uint8)
  spec = {"flip": 0.5, "crop_scale": (0.5, 1.0)}
  views_fn = inputs.make_views_fn(
    {"local": dict(spec, count=2, size=(8, 4)), "global": dict(spec, count=2)}
  )
  views = views_fn(jax.random.key(3), x)
  assert [len(views[r]) for r in ("global", "local")] == [2, 2]
  assert views["local"][0].shape == (4, 8, 4, 3)
  # view i (global first, then local) draws from fold_in(rng, i)
  want = augment.make_views(
    jax.random.key(3), x, [spec, spec, dict(spec, size=(8, 4))] * 1
  )
  np.testing.assert_allclose(views["global"][0], want[0])
  np.testing.assert_allclose(views["global"][1], want[1])
  np.testing.assert_allclose(views["local"][0], want[2])
  assert not np.allclose(views["global"][0], views["global"][1])
  assert inputs.view_counts({"a": {"count": 3}, "b": {}}) == {"a": 3, "b": 1}
  with pytest.raises(ValueError, match="count"):
    inputs.view_counts({"a": {"count": 0}})


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
  # each role reads image `frame` of the pair (default 0)
  views_fn = inputs.make_views_fn(
    {"anchor": {"count": 2}, "partner": {"frame": 1, "flip": 0.0}}
  )
  x = np.asarray(batches[0]["image"])
  views = views_fn(jax.random.key(0), x)
  assert sorted(views) == ["anchor", "partner"] and len(views["anchor"]) == 2
  want_a = augment.preprocess(x[:, 0], (32, 16))
  for v in views["anchor"]:
    np.testing.assert_allclose(v, want_a)
  np.testing.assert_allclose(
    views["partner"][0], augment.preprocess(x[:, 1], (32, 16))
  )

"""grain training loaders: coverage, P x K structure, resume, sharding."""

import itertools

import numpy as np
import pytest
from PIL import Image

from idlearn import data
from idlearn.data import datasets, loader, sources

SIZE = (32, 16)


def _loader(data_dir, **kw):
  args = dict(
    name="pku_reid",
    split="train",
    image_size=SIZE,
    global_batch_size=16,
    data_dir=data_dir,
  )
  return data.make_train_loader(**(args | kw))


def _take(ds, n):
  return list(itertools.islice(iter(ds), n))


def test_random_batches_cover_each_epoch_once(data_dir, built):
  built("pku_reid")
  batches = _take(_loader(data_dir), 2 * 62)  # 992 = 62 x 16
  b = batches[0]
  assert b["image"].shape == (16, 32, 16, 3) and b["image"].dtype == np.uint8
  for key in ("id", "label", "cam", "index"):
    assert b[key].shape == (16,) and b[key].dtype == np.int32
  idx = np.concatenate([x["index"] for x in batches])
  np.testing.assert_array_equal(np.sort(idx[:992]), np.arange(992))
  np.testing.assert_array_equal(np.sort(idx[992:]), np.arange(992))
  assert not np.array_equal(idx[:992], idx[992:])  # reshuffled per epoch


def test_rows_match_the_files_read_with_pil(data_dir, built):
  meta = sources.split_meta(built("pku_reid"), "train")
  native = _take(_loader(data_dir, image_size=(128, 48)), 1)[0]
  small = _take(_loader(data_dir), 1)[0]
  np.testing.assert_array_equal(native["index"], small["index"])
  for row in (0, 7):
    i = native["index"][row]
    path = datasets.BUNDLED_DIR / "pku_reid" / meta["path"][i]
    img = Image.open(path).convert("RGB")
    np.testing.assert_array_equal(native["image"][row], np.asarray(img))
    want = img.resize((16, 32), Image.BILINEAR)
    np.testing.assert_array_equal(small["image"][row], np.asarray(want))
    assert native["id"][row] == int(meta["path"][i].split("/")[1])
    assert native["cam"][row] == int(path.name[:2]) - 1


def test_same_seed_same_batches_other_seed_differs(data_dir):
  a = _take(_loader(data_dir, seed=3), 2)
  b = _take(_loader(data_dir, seed=3), 2)
  c = _take(_loader(data_dir, seed=4), 2)
  for x, y in zip(a, b, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert not np.array_equal(a[0]["index"], c[0]["index"])


def test_pk_batches(data_dir):
  batches = _take(_loader(data_dir, sampler="pk", k=4, seed=1), 14)
  per_epoch = 62 // 4  # P = 16 // 4 = 4 ids per batch -> 15 batches/epoch
  ids_seen = []
  for b in batches[: per_epoch - 1]:
    ids = b["id"].reshape(4, 4)  # [P, k]: consecutive rows per identity
    assert (ids == ids[:, :1]).all()
    assert len(np.unique(ids[:, 0])) == 4
    # k distinct images per identity (every PKU id has 16 images).
    assert all(len(set(r)) == 4 for r in b["index"].reshape(4, 4))
    ids_seen += ids[:, 0].tolist()
  assert len(ids_seen) == len(set(ids_seen))  # each id once per epoch


def test_resume_yields_exactly_the_next_batch(data_dir):
  for sampler in ("random", "pk"):
    ds = _loader(data_dir, sampler=sampler, seed=7)
    it = iter(ds)
    for _ in range(3):
      next(it)
    state = it.get_state()
    want = next(it)
    it2 = iter(_loader(data_dir, sampler=sampler, seed=7))
    it2.set_state(state)
    got = next(it2)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_worker_processes_give_the_same_batches_and_resume(data_dir):
  want = _take(_loader(data_dir, seed=5), 4)
  it = iter(_loader(data_dir, seed=5, num_workers=2))
  got = [next(it) for _ in range(2)]
  state = it.get_state()
  it2 = iter(_loader(data_dir, seed=5, num_workers=2))
  it2.set_state(state)
  got += [next(it2) for _ in range(2)]
  it.close()
  it2.close()
  for x, y in zip(got, want, strict=True):
    np.testing.assert_array_equal(x["index"], y["index"])
    np.testing.assert_array_equal(x["image"], y["image"])


@pytest.mark.parametrize("sampler", ["random", "pk"])
def test_processes_read_disjoint_shards_of_the_global_batch(data_dir, sampler):
  full = _take(_loader(data_dir, sampler=sampler), 3)
  parts = [
    _take(
      _loader(data_dir, sampler=sampler, process_index=p, process_count=2), 3
    )
    for p in range(2)
  ]
  for s in range(3):
    assert parts[0][s]["index"].shape == (8,)
    joined = np.concatenate([parts[0][s]["index"], parts[1][s]["index"]])
    np.testing.assert_array_equal(joined, full[s]["index"])


def test_frame_pairs_are_consecutive_frames_of_one_tracklet(
  data_dir, built, shared
):
  mars = shared("mars_mini")
  meta = sources.split_meta(built("mars", mars), "train")
  ds = data.make_train_loader(
    name="mars",
    split="train",
    image_size=SIZE,
    global_batch_size=8,
    sampler="frame_pairs",
    data_dir=data_dir,
    manual_dir=mars,
  )
  b = _take(ds, 1)[0]
  assert b["image"].shape == (8, 2, 32, 16, 3)
  i, j = b["index"][:, 0], b["index"][:, 1]
  np.testing.assert_array_equal(meta["tracklet"][i], meta["tracklet"][j])
  np.testing.assert_array_equal(meta["tracklet"][i], b["tracklet"])
  np.testing.assert_array_equal(meta["id"][i], b["id"])
  assert (meta["frame"][j] > meta["frame"][i]).all()
  # No frame of the tracklet lies between the two.
  for a, c in zip(i, j, strict=True):
    fr = meta["frame"][meta["tracklet"] == meta["tracklet"][a]]
    assert not ((fr > meta["frame"][a]) & (fr < meta["frame"][c])).any()
  rand = data.make_train_loader(
    name="mars", split="train", image_size=SIZE, global_batch_size=8,
    data_dir=data_dir, manual_dir=mars,
  )  # fmt: skip
  r = _take(rand, 1)[0]
  np.testing.assert_array_equal(r["tracklet"], meta["tracklet"][r["index"]])
  np.testing.assert_array_equal(r["frame"], meta["frame"][r["index"]])
  pairs = loader.frame_pairs(meta)
  # 1719 frames in 32 tracklets -> 1719 - 32 consecutive pairs.
  assert len(pairs) == 1719 - 32


def test_pk_by_tracklet_groups_frames_of_one_tracklet(data_dir, built, shared):
  mars = shared("mars_mini")
  meta = sources.split_meta(built("mars", mars), "train")
  ds = data.make_train_loader(
    name="mars", split="train", image_size=SIZE, global_batch_size=16,
    sampler="pk", k=4, group_by="tracklet", data_dir=data_dir,
    manual_dir=mars, seed=2,
  )  # fmt: skip
  for b in _take(ds, 4):  # 32 tracklets / P=4 -> 8 batches per epoch
    track = meta["tracklet"][b["index"]].reshape(4, 4)
    assert (track == track[:, :1]).all() and len(set(track[:, 0])) == 4
    np.testing.assert_array_equal(b["tracklet"], track.ravel())


def test_labels_override_ids_and_exclude_unlabelled(data_dir, built):
  meta = sources.split_meta(built("pku_reid"), "train")
  labels = np.full(len(meta["id"]), -1, np.int32)
  keep = np.flatnonzero(meta["id"] % 3 == 0)  # a third of the ids
  labels[keep] = meta["id"][keep] // 3
  n_ids = len(np.unique(labels[keep]))
  batches = _take(_loader(data_dir, sampler="pk", k=4, labels=labels), 8)
  for b in batches:
    np.testing.assert_array_equal(b["id"], labels[b["index"]])
    np.testing.assert_array_equal(b["label"], labels[b["index"]])
    assert (b["id"] >= 0).all()
    ids = b["id"].reshape(4, 4)
    assert (ids == ids[:, :1]).all()
  seen = {int(i) for b in batches for i in b["id"]}
  assert len(seen) <= n_ids
  with pytest.raises(ValueError, match="labels has shape"):
    _loader(data_dir, sampler="pk", labels=labels[:5])
  with pytest.raises(ValueError, match="group_by"):
    _loader(data_dir, sampler="pk", group_by="tracklet")


def test_pk_repeats_identities_when_fewer_than_p(data_dir, built):
  meta = sources.split_meta(built("pku_reid"), "train")
  labels = np.full(len(meta["id"]), -1, np.int32)
  labels[np.flatnonzero(meta["id"] == meta["id"][0])] = 0
  labels[np.flatnonzero(meta["id"] == meta["id"][-1])] = 1  # 2 ids < P = 4
  with pytest.raises(ValueError, match="needs P = .* = 4 identities"):
    _loader(data_dir, sampler="pk", k=4, labels=labels)
  batches = _take(
    _loader(data_dir, sampler="pk", k=4, labels=labels, repeat_ids=True), 3
  )
  for b in batches:
    ids = b["id"].reshape(4, 4)
    assert (ids == ids[:, :1]).all()
    assert sorted(ids[:, 0]) == [0, 0, 1, 1]  # each id in 2 of the P slots
    assert (labels[b["index"]] == b["id"]).all()


def test_camera_pairs_pair_every_image_with_another_camera(data_dir, built):
  meta = sources.split_meta(built("pku_reid"), "train")
  batches = _take(_loader(data_dir, sampler="camera_pairs", seed=3), 62)
  b = batches[0]
  assert b["image"].shape == (16, 2, 32, 16, 3)
  first = np.concatenate([x["index"][:, 0] for x in batches])
  np.testing.assert_array_equal(np.sort(first), np.arange(992))  # an epoch
  for x in batches:
    i, j = x["index"][:, 0], x["index"][:, 1]
    assert (meta["cam"][i] != meta["cam"][j]).all()
    np.testing.assert_array_equal(x["pair_cam"], meta["cam"][x["index"]])
    np.testing.assert_array_equal(x["pair_id"], meta["id"][x["index"]])
    np.testing.assert_array_equal(x["id"], meta["id"][i])
  # partners are drawn, not fixed: another seed pairs differently
  other = _take(_loader(data_dir, sampler="camera_pairs", seed=4), 1)[0]
  assert not np.array_equal(other["index"], b["index"])


def test_domain_pattern_labels_each_row_with_its_domain(data_dir, built):
  # domains from the paths: PKU-Reid's identity folders by their first digit
  meta = sources.split_meta(built("pku_reid"), "train")
  digit = np.array([p.split("/")[1][0] for p in meta["path"]])
  names = sorted(set(digit))
  assert len(names) >= 2
  want = np.array([names.index(d) for d in digit])
  pattern = r"^train/(\d)\d+/"
  got, got_names = data.domain_labels(meta["path"], pattern)
  np.testing.assert_array_equal(got, want)
  assert got_names == names
  for b in _take(_loader(data_dir, sampler="pk", domain_pattern=pattern), 3):
    assert b["domain"].dtype == np.int32
    np.testing.assert_array_equal(b["domain"], want[b["index"]])
  assert "domain" not in _take(_loader(data_dir), 1)[0]
  with pytest.raises(ValueError, match=r"train/.*does not match"):
    data.domain_labels(meta["path"], r"^test/(\d)")
  with pytest.raises(ValueError, match="needs a group"):
    data.domain_labels(meta["path"], r"^train/")


def test_bad_arguments(data_dir):
  with pytest.raises(ValueError, match="needs a video dataset"):
    _loader(data_dir, sampler="frame_pairs")
  with pytest.raises(ValueError, match="needs P = .* = 100 identities"):
    _loader(data_dir, sampler="pk", k=2, global_batch_size=200)
  with pytest.raises(ValueError, match="multiple of k=3"):
    _loader(data_dir, sampler="pk", k=3)
  with pytest.raises(ValueError, match="not divisible by process_count=3"):
    _loader(data_dir, process_count=3, process_index=0)
  with pytest.raises(ValueError, match="sampler='triplet'"):
    _loader(data_dir, sampler="triplet")
  with pytest.raises(ValueError, match="split='test' not in pku_reid"):
    _loader(data_dir, split="test")


def test_eval_sets(data_dir, built):
  built("pku_reid")
  q, g = data.reid_eval_sets("pku_reid", image_size=SIZE, data_dir=data_dir)
  assert q is g and q["image"].shape == (192, 32, 16, 3)
  assert len(np.unique(q["id"])) == 12
  built("market1501")
  q, g = data.reid_eval_sets("market1501", image_size=SIZE, data_dir=data_dir)
  assert q["image"].shape[0] == g["image"].shape[0] == 32
  with pytest.raises(ValueError, match="no re-ID protocol"):
    data.reid_eval_sets("att_faces", image_size=SIZE, data_dir=data_dir)

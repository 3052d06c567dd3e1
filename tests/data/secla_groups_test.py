"""Image-caption groups for face naming: held-out split, group contents,
easy groups, and the group loader (shapes, extras, process slices,
resume)."""

import numpy as np
import pytest

from idlearn.data import secla_groups as sg

LABELS = np.repeat(np.arange(28), 10).astype(np.int32)  # AT&T train split
CFG = dict(groups=300, test_groups=50, max_faces=4, distractors=2,
           drop_name=0.2, test_per_subject=2, split_seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def built():
  return sg.build(LABELS, CFG)


def test_held_out_images_are_other_images_of_the_same_subjects(built):
  train_rows, test_rows = sg.split_rows(LABELS, 2, seed=3)
  assert not set(train_rows) & set(test_rows)
  assert len(train_rows) + len(test_rows) == len(LABELS)
  np.testing.assert_array_equal(np.bincount(LABELS[test_rows]), 2)
  train, test = built
  used = lambda g: set(g.faces[g.face_mask])
  assert used(train) <= set(train_rows) and used(test) <= set(test_rows)
  # fixed by split_seed: every arm and seed sees the same groups
  again, _ = sg.build(LABELS, CFG)
  np.testing.assert_array_equal(again.names, train.names)
  other, _ = sg.build(LABELS, {**CFG, "split_seed": 4})
  assert not np.array_equal(other.faces, train.faces)


def test_groups_hold_distinct_people_and_their_captions(built):
  train, _ = built
  g = train
  assert g.faces.shape == (300, 4) and g.names.shape == (300, 1 + 4 + 2)
  assert np.all(g.names[:, 0] == sg.NONAME)
  sizes = g.face_mask.sum(1)
  assert set(sizes) == {1, 2, 3, 4}
  dropped = distract = 0
  for i in range(len(g)):
    who = LABELS[g.faces[i][g.face_mask[i]]] + 1
    assert len(set(who)) == len(who)  # distinct subjects
    cap = g.names[i][g.name_mask[i]][1:]
    assert len(set(cap)) == len(cap) and sg.NONAME not in cap
    truth = g.truth[i][g.face_mask[i]]
    np.testing.assert_array_equal(truth, np.where(np.isin(who, cap), who, 0))
    dropped += np.sum(truth == sg.NONAME)
    distract += len(set(cap) - set(who))
    assert len(set(cap) - set(who)) <= 2
  assert 0 < dropped < 0.35 * sizes.sum() and distract > len(g) // 2


def test_easy_groups_and_their_faces(built):
  train, _ = built
  easy = sg.easy(train)
  assert 0 < easy.sum() < 0.2 * len(train)
  sub = train.subset(easy)
  assert sub.faces.shape == (easy.sum(), 1) and sub.names.shape[1] == 2
  rows = sg.easy_faces(train, 28)
  assert len(rows) == 29 and len(rows[sg.NONAME]) == 0
  for name, r in enumerate(rows):
    for row in r:  # the caption names it: right unless dropped + distractor
      i = np.flatnonzero(easy & (train.faces[:, 0] == row))[0]
      assert train.names[i, 1] == name


def test_bad_fields_name_the_field():
  with pytest.raises(ValueError, match="config.miner.distractors = -1"):
    sg.resolve({"distractors": -1}, "config.miner")
  with pytest.raises(ValueError, match="drop_name = 1.0"):
    sg.resolve({"drop_name": 1.0})
  with pytest.raises(ValueError, match="unknown field"):
    sg.resolve({"faces": 3})
  with pytest.raises(ValueError, match="test_per_subject = 10"):
    sg.split_rows(LABELS, 10, seed=0)


def _loader(built, **kw):
  train, _ = built
  # each image holds its row: channel 0 = row // 256, channel 1 = row % 256
  row = np.arange(len(LABELS))
  images = np.zeros((len(LABELS), 2, 2, 3), np.uint8)
  images[..., 0] = (row // 256)[:, None, None]
  images[..., 1] = (row % 256)[:, None, None]
  return sg.GroupLoader(
    images, train, global_batch=8, seed=5,
    easy_rows=sg.easy_faces(train, 28), **kw,
  )  # fmt: skip


def test_batches_shapes_padding_and_extras(built):
  train, _ = built
  b = next(iter(_loader(built, extras=True)))
  assert b["image"].shape == (8 * (4 + 6), 2, 2, 3)
  assert b["face_mask"].shape == b["truth"].shape == (8, 4)
  assert b["names"].shape == b["name_mask"].shape == (8, 7)
  assert b["names"].dtype == np.int32 and b["names"].min() >= 0
  img = b["image"][:, 0, 0].astype(int)
  rows = (img[:, 0] * 256 + img[:, 1]).reshape(8, 10)
  faces, extra = rows[:, :4], rows[:, 4:]
  fm = b["face_mask"]
  # unused face slots repeat the group's first face
  np.testing.assert_array_equal(
    faces[~fm], np.broadcast_to(faces[:, :1], fm.shape)[~fm]
  )
  known = b["extra_mask"]
  assert not known[:, 0].any() and known.any()
  easy_rows = sg.easy_faces(train, 28)
  for i, j in zip(*np.nonzero(known), strict=True):
    assert extra[i, j - 1] in easy_rows[b["names"][i, j]]
  assert not (known & ~b["name_mask"]).any()
  assert "extra_mask" not in next(iter(_loader(built)))


def test_process_slices_and_resume_repeat_the_one_process_stream(built):
  it = iter(_loader(built, extras=True))
  whole = [next(it) for _ in range(40)]  # > one epoch of 300 groups
  parts = [iter(_loader(built, extras=True, process_index=p,
                        process_count=2)) for p in (0, 1)]  # fmt: skip
  for k in range(3):
    a, b = next(parts[0]), next(parts[1])
    for key, v in whole[k].items():
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), v)
  resumed = iter(_loader(built, extras=True))
  resumed.set_state(it.get_state())
  assert resumed.get_state() == {"step": 40}
  it2 = iter(_loader(built, extras=True))
  it2.set_state({"step": 38})
  np.testing.assert_array_equal(next(it2)["names"], whole[38]["names"])

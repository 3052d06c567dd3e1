"""Evaluation sources: load_split, verification pairs (AT&T, LFW)."""

import numpy as np
import pytest
from PIL import Image

from idlearn import data


def test_att_verification_pairs_on_held_out_subjects(data_dir, built):
  built("att_faces")
  p = data.verification_pairs("att_faces", data_dir=data_dir, seed=3)
  test = data.load_split(
    "att_faces", p["split"], image_size=(28, 23), data_dir=data_dir
  )
  assert p["split"] == "test" and test["image"].shape == (120, 28, 23, 3)
  assert len(p["same"]) == 600
  id1, id2 = test["id"][p["index1"]], test["id"][p["index2"]]
  np.testing.assert_array_equal(p["same"], id1 == id2)
  assert set(id1) | set(id2) <= set(range(29, 41))
  np.testing.assert_array_equal(np.bincount(p["fold"]), np.full(10, 60))
  np.testing.assert_array_equal(
    np.bincount(p["fold"][p["same"]]), np.full(10, 30)
  )
  keys = set(zip(p["index1"].tolist(), p["index2"].tolist(), strict=True))
  assert len(keys) == 600  # no pair twice
  again = data.verification_pairs("att_faces", data_dir=data_dir, seed=3)
  np.testing.assert_array_equal(again["index1"], p["index1"])
  other = data.verification_pairs("att_faces", data_dir=data_dir, seed=4)
  assert not np.array_equal(other["index1"], p["index1"])


def _lfw(root):
  people = {"Ann_Lee": 2, "Bo_Chen": 1, "Cy_Ode": 2}
  for n, (name, count) in enumerate(people.items()):
    for i in range(1, count + 1):
      path = root / "lfw" / name / f"{name}_{i:04d}.jpg"
      path.parent.mkdir(parents=True, exist_ok=True)
      px = np.full((20, 20, 3), 40 * n + 10 * i, np.uint8)
      Image.fromarray(px).save(path)
  (root / "pairs.txt").write_text(
    "2\t1\nAnn_Lee\t1\t2\nBo_Chen\t1\tCy_Ode\t2\n"
    "Cy_Ode\t1\t2\nAnn_Lee\t2\tBo_Chen\t1\n"
  )
  return root


def test_lfw_builds_with_its_pairs(tmp_path):
  root = _lfw(tmp_path / "lfw_home")
  kw = dict(data_dir=tmp_path / "tfds", manual_dir=root)
  p = data.verification_pairs("lfw", **kw)
  split = data.load_split("lfw", p["split"], image_size=(20, 20), **kw)
  assert split["image"].shape == (5, 20, 20, 3)
  np.testing.assert_array_equal(split["id"], [0, 0, 1, 2, 2])
  np.testing.assert_array_equal(p["same"], [True, False, True, False])
  np.testing.assert_array_equal(p["fold"], [0, 0, 1, 1])
  got = [
    (split["path"][a], split["path"][b])
    for a, b in zip(p["index1"], p["index2"], strict=True)
  ]
  assert got[1] == (
    "lfw/Bo_Chen/Bo_Chen_0001.jpg",
    "lfw/Cy_Ode/Cy_Ode_0002.jpg",
  )
  # Pixel check: Cy_Ode_0002 was written as 40 * 2 + 10 * 2 = 100.
  assert (split["image"][p["index2"][1]] == 100).all()


def test_lfw_pairs_naming_a_missing_image_fail(tmp_path):
  root = _lfw(tmp_path / "l")
  (root / "lfw" / "Bo_Chen" / "Bo_Chen_0001.jpg").write_bytes(b"junk")
  with pytest.raises(ValueError, match="1 images of pairs.txt are not"):
    data.verification_pairs("lfw", data_dir=tmp_path / "t", manual_dir=root)
  with pytest.raises(ValueError, match="verification pairs exist for"):
    data.verification_pairs("market1501", data_dir=tmp_path / "t")

"""Builders on the real (bundled and ../shared) data, plus bad inputs."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idlearn import data, errors
from idlearn.data import datasets, sources


def _ids(builder, split):
  return sources.split_meta(builder, split)["id"]


def test_pku_reid_bundled_counts(built):
  b = built("pku_reid")
  assert b.info.splits["train"].num_examples == 992
  assert b.info.splits["val"].num_examples == 192
  assert len(np.unique(_ids(b, "train"))) == 62
  assert len(np.unique(_ids(b, "val"))) == 12
  assert not set(_ids(b, "train")) & set(_ids(b, "val"))
  meta = sources.split_meta(b, "train")
  np.testing.assert_array_equal(np.unique(meta["cam"]), [0, 1])
  # 2 cameras x 8 orientations per person.
  np.testing.assert_array_equal(np.bincount(meta["label"]), np.full(62, 16))
  log = data.build_log(b)
  assert log["train"]["num_corrupt"] == log["train"]["num_unparseable"] == 0


def test_pku_png_files_hold_jpeg_decoded_by_content(built):
  b = built("pku_reid")
  meta = sources.split_meta(b, "train")
  i = int(np.flatnonzero(meta["path"] == "train/085/01_4.png")[0])
  raw = sources.data_source(b, "train")[i]["image"]
  assert raw[:3] == b"\xff\xd8\xff"  # JPEG magic inside a .png name
  path = datasets.BUNDLED_DIR / "pku_reid" / "train" / "085" / "01_4.png"
  want = np.asarray(Image.open(path).convert("RGB"))
  assert want.shape == (128, 48, 3)
  np.testing.assert_array_equal(sources.decode(raw, (128, 48)), want)


def test_pku_reid_shared_copy_matches_bundled(built, shared):
  shared = built("pku_reid", shared("pku_reid"))
  bundled = built("pku_reid")
  for split in ("train", "val"):
    a, c = sources.split_meta(shared, split), sources.split_meta(bundled, split)
    np.testing.assert_array_equal(a["path"], c["path"])
    np.testing.assert_array_equal(a["id"], c["id"])


def test_att_faces_counts_and_grey_pixels(built):
  b = built("att_faces")
  train, test = _ids(b, "train"), _ids(b, "test")
  assert len(train) + len(test) == 400
  np.testing.assert_array_equal(np.unique(train), np.arange(1, 29))
  np.testing.assert_array_equal(np.unique(test), np.arange(29, 41))
  np.testing.assert_array_equal(np.bincount(test)[29:], np.full(12, 10))
  meta = sources.split_meta(b, "test")
  assert (meta["cam"] == -1).all()
  i = int(np.flatnonzero(meta["path"] == "s33/7.pgm")[0])
  img = sources.decode(sources.data_source(b, "test")[i]["image"], (112, 92))
  pgm = np.asarray(Image.open(datasets.BUNDLED_DIR / "att_faces/s33/7.pgm"))
  assert pgm.shape == (112, 92)
  for c in range(3):
    np.testing.assert_array_equal(img[..., c], pgm)


def test_market_mini_counts(built):
  b = built("market1501")
  counts = {
    s: b.info.splits[s].num_examples for s in ("train", "query", "gallery")
  }
  assert counts == {"train": 32, "query": 32, "gallery": 32}
  tr, q, g = (_ids(b, s) for s in ("train", "query", "gallery"))
  assert len(np.unique(tr)) == len(np.unique(q)) == 16
  assert set(q) == set(g) and not set(tr) & set(q)
  cams = np.concatenate(
    [sources.split_meta(b, s)["cam"] for s in ("train", "query", "gallery")]
  )
  np.testing.assert_array_equal(np.unique(cams), np.arange(6))
  meta = sources.split_meta(b, "query")
  # 0014_c1s1_001051_00.jpg -> id 14, camera index 0.
  i = int(np.flatnonzero(meta["path"] == "query/0014_c1s1_001051_00.jpg")[0])
  assert (meta["id"][i], meta["cam"][i]) == (14, 0)


def test_mars_mini_counts_and_frame_order(built, shared):
  b = built("mars", shared("mars_mini"))
  metas = {s: sources.split_meta(b, s) for s in ("train", "query", "gallery")}
  assert sum(len(m["id"]) for m in metas.values()) == 5572
  assert len(metas["train"]["id"]) == 1719
  assert sum(len(np.unique(m["tracklet"])) for m in metas.values()) == 96
  assert len(np.unique(np.concatenate([m["id"] for m in metas.values()]))) == 32
  m = metas["train"]
  # Records of a tracklet are consecutive, frames increasing.
  same = m["tracklet"][1:] == m["tracklet"][:-1]
  assert (np.diff(m["frame"])[same] > 0).all()
  assert (np.diff(m["tracklet"]) >= 0).all()
  i = int(np.flatnonzero(m["path"] == "bbox_train/0003/0003C4T0003F002.jpg")[0])
  assert (m["id"][i], m["cam"][i], m["frame"][i]) == (3, 3, 2)


# --- synthetic fixtures for what the real subsets lack -----------------------


def _jpeg(path: Path, seed: int = 0, size=(16, 32)) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  Image.fromarray(img).save(path, format="JPEG")


def _truncated(path: Path) -> None:
  buf = io.BytesIO()
  Image.fromarray(np.zeros((32, 16, 3), np.uint8) + 90).save(buf, "JPEG")
  path.write_bytes(buf.getvalue()[:200])


def _market(root: Path) -> Path:
  for i, name in enumerate(
    [
      "0002_c1s1_000451_03.jpg",
      "0002_c2s1_000551_01.jpg",
      "0007_c3s1_000151_01.jpg",
    ]
  ):
    _jpeg(root / "bounding_box_train" / name, i)
  _jpeg(root / "query" / "0005_c1s1_001351_00.jpg", 10)
  gallery = root / "bounding_box_test"
  _jpeg(gallery / "0005_c4s1_001351_02.jpg", 11)
  _jpeg(gallery / "-1_c1s1_000401_03.jpg", 12)  # junk
  _jpeg(gallery / "0000_c2s1_000801_01.jpg", 13)  # distractor
  _jpeg(gallery / "Thumbs_ab.jpg", 14)  # unparseable name
  _truncated(gallery / "0005_c5s1_000001_01.jpg")  # corrupt
  return root


def test_market_junk_distractor_corrupt_unparseable(tmp_path):
  root = _market(tmp_path / "Market-1501-v15.09.15")
  kw = dict(data_dir=os.fspath(tmp_path / "tfds"), manual_dir=tmp_path)
  b = data.prepare("market1501", **kw)
  log = data.build_log(b)["gallery"]
  assert (log["examples"], log["num_corrupt"], log["num_unparseable"]) == (
    3,
    1,
    1,
  )
  assert log["corrupt"] == [
    os.fspath(root / "bounding_box_test" / "0005_c5s1_000001_01.jpg")
  ]
  np.testing.assert_array_equal(sorted(_ids(b, "gallery")), [-1, 0, 5])
  query, gallery = data.reid_eval_sets("market1501", image_size=(8, 4), **kw)
  np.testing.assert_array_equal(sorted(gallery["id"]), [0, 5])  # junk gone
  assert gallery["image"].shape == (2, 8, 4, 3)
  assert query["id"].tolist() == [5] and query["cam"].tolist() == [0]


def test_strict_build_raises_and_leaves_nothing_loadable(tmp_path):
  _market(tmp_path / "m")
  data_dir = tmp_path / "tfds"
  with pytest.raises(ValueError, match="corrupt file .*0005_c5s1_000001_01"):
    data.prepare(
      "market1501", data_dir=data_dir, manual_dir=tmp_path / "m", strict=True
    )
  left = [f for _, _, fs in os.walk(data_dir) for f in fs]
  assert not [f for f in left if f.endswith(".json")], left
  # The same folder then builds fine without strict.
  b = data.prepare("market1501", data_dir=data_dir, manual_dir=tmp_path / "m")
  assert b.info.splits["gallery"].num_examples == 3


def test_missing_or_wrong_manual_dir_names_the_layout(tmp_path):
  with pytest.raises(
    ValueError, match="(?s)not a directory.*bounding_box_train"
  ):
    data.prepare("market1501", data_dir=tmp_path, manual_dir=tmp_path / "no")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="(?s)missing: train.*val/all_imgs"):
    data.prepare("pku_reid", data_dir=tmp_path, manual_dir=tmp_path / "empty")
  with pytest.raises(ValueError, match="manual_dir is required for 'msmt17'"):
    data.prepare("msmt17", data_dir=tmp_path)
  with pytest.raises(ValueError, match="name='market'"):
    data.prepare("market", data_dir=tmp_path)


def test_split_with_no_readable_image_fails_the_build(tmp_path):
  _truncated_dir = tmp_path / "f" / "alice"
  _truncated_dir.mkdir(parents=True)
  _truncated(_truncated_dir / "1.jpg")
  with pytest.raises(ValueError, match="no readable image"):
    data.prepare(
      "image_folder", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "f"
    )
  assert not list((tmp_path / "tfds").rglob("dataset_info.json"))


def test_dukemtmc_and_msmt17_layouts(tmp_path):
  duke = tmp_path / "DukeMTMC-reID"
  _jpeg(duke / "bounding_box_train" / "0001_c2_f0046182.jpg", 1)
  _jpeg(duke / "query" / "0005_c8_f0000001.jpg", 2)
  _jpeg(duke / "bounding_box_test" / "0005_c1_f0000002.jpg", 3)
  b = data.prepare(
    "dukemtmc_reid", data_dir=tmp_path / "t", manual_dir=tmp_path
  )
  q = sources.split_meta(b, "query")
  assert (q["id"][0], q["cam"][0]) == (5, 7)

  ms = tmp_path / "MSMT17_V1"
  names = {
    "train": [
      "0000/0000_000_01_0303morning_0015_0.jpg",
      "0001/0001_003_14_0303noon_0888_1.jpg",
    ],
    "test": [
      "0002/0002_000_07_0303morning_0100_0.jpg",
      "0002/0002_001_02_0303noon_0101_0.jpg",
    ],
  }
  for part, rels in names.items():
    for i, rel in enumerate(rels):
      _jpeg(ms / part / rel, i)
  (ms / "list_train.txt").write_text(f"{names['train'][0]} 0\n")
  (ms / "list_val.txt").write_text(f"{names['train'][1]} 1\nbad_line\n")
  (ms / "list_query.txt").write_text(f"{names['test'][0]} 2\n")
  (ms / "list_gallery.txt").write_text(f"{names['test'][1]} 2\n")
  b = data.prepare("msmt17", data_dir=tmp_path / "t", manual_dir=tmp_path)
  tr = sources.split_meta(b, "train")
  assert tr["id"].tolist() == [0, 1] and tr["cam"].tolist() == [0, 13]
  assert data.build_log(b)["train"]["num_unparseable"] == 1
  assert sources.split_meta(b, "gallery")["cam"].tolist() == [1]


def test_mars_junk_name_and_image_folder(tmp_path):
  mars = tmp_path / "mars"
  for f in (1, 2, 3):
    _jpeg(mars / "bbox_train" / "0003" / f"0003C4T0003F00{f}.jpg", f)
  _jpeg(mars / "bbox_train" / "00-1" / "00-1C1T0001F001.jpg", 9)
  peps = mars / "gtPepper"
  peps.mkdir()
  _jpeg(mars / "bbox_test" / "0004" / "0004C1T0002F001.jpg", 5)
  _jpeg(mars / "bbox_test" / "0004" / "0004C2T0001F001.jpg", 6)
  for split, cam in (("query", 1), ("gallery", 2)):
    rel = f"bbox_test/0004/0004C{cam}T000{3 - cam}F001.jpg"
    (peps / f"{split}.json").write_text(f'[{{"img_paths": ["{rel}"]}}]')
  b = data.prepare("mars", data_dir=tmp_path / "t", manual_dir=mars)
  m = sources.split_meta(b, "train")
  assert sorted(m["id"].tolist()) == [-1, 3, 3, 3]
  assert len(np.unique(m["tracklet"])) == 2

  folder = tmp_path / "faces"
  for n, who in enumerate(["bob", "alice", "carol"]):
    for i in range(n + 1):
      _jpeg(folder / who / f"{i}.jpg", 10 * n + i)
  b = data.prepare("image_folder", data_dir=tmp_path / "t", manual_dir=folder)
  m = sources.split_meta(b, "train")
  # ids follow the sorted folder names: alice 0 (2), bob 1 (1), carol 2 (3).
  np.testing.assert_array_equal(np.bincount(m["id"]), [2, 1, 3])


def test_concurrent_prepare_builds_once(tmp_path):
  # Two processes prepare the same dataset into one data_dir at once.
  code = (
    "import sys; from idlearn import data; "
    "b = data.prepare('market1501', data_dir=sys.argv[1]); "
    "print(b.info.splits['gallery'].num_examples)"
  )
  root = Path(__file__).resolve().parents[2]
  env = dict(os.environ, PYTHONPATH=os.fspath(root), JAX_PLATFORMS="cpu")
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", code, os.fspath(tmp_path)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      env=env,
    )
    for _ in range(2)
  ]
  outs = [p.communicate(timeout=120) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
  assert [o[0].split()[-1] for o in outs] == [b"32", b"32"]
  built = list(tmp_path.glob("market1501/bundled/*/dataset_info.json"))
  assert len(built) == 1
  assert not list(tmp_path.glob("market1501/bundled/incomplete*"))


def test_split_meta_is_cached_next_to_the_records(built):
  b = built("market1501")
  want = sources.split_meta(b, "query")
  cache = Path(b.data_path) / "idlearn_meta-query.npz"
  assert cache.exists()
  sources._split_meta.cache_clear()
  got = sources.split_meta(b, "query")  # now from the .npz
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  np.testing.assert_array_equal(got["id"], sources._read_meta(b, "query")["id"])


def test_identity_folder_that_is_no_number_names_the_file(tmp_path):
  """ "²" is a digit to str.isdigit but not an int: counted (or, strict,
  raised naming the file), never a bare int() error."""
  root = tmp_path / "pku"
  for split in ("train/001", "train/²", "val/all_imgs/002"):
    _jpeg(root / split / "01_1.png", 3)
  kw = dict(data_dir=os.fspath(tmp_path / "tfds"), manual_dir=root)
  with pytest.raises(errors.DataError, match=r"unparseable file .*²/01_1.png"):
    data.prepare("pku_reid", strict=True, **kw)
  b = data.prepare("pku_reid", **kw)
  assert data.build_log(b)["train"]["num_unparseable"] == 1
  np.testing.assert_array_equal(_ids(b, "train"), [1])

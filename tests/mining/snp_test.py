"""SnP training-set search: Frechet distance, balanced k-means, the search
on synthetic clusters, the budget, and end to end on the bundled images
(pool folders -> image folder -> the image_folder data set, and the
`idlearn select` command)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from subprocess_env import one_device_env

from idlearn import data
from idlearn.errors import DataError
from idlearn.mining import selection, snp

_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = _ROOT / "idlearn" / "data" / "bundled"
# Vendored in the repo: the end-to-end tests never skip.
POOL = {
  "pku_reid": os.fspath(BUNDLED / "pku_reid" / "train"),
  "market1501": os.fspath(BUNDLED / "market1501_mini" / "bounding_box_train"),
}
TARGET = os.fspath(BUNDLED / "market1501_mini" / "bounding_box_test")


def _random_cov(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d))
  return a @ a.T / d


def _fd_reference(mu1, cov1, mu2, cov2):
  """The FID formula with scipy's general sqrtm, float64 (full rank)."""
  root = scipy.linalg.sqrtm(cov1 @ cov2).real
  diff = mu1 - mu2
  return diff @ diff + np.trace(cov1 + cov2 - 2 * root)


def test_frechet_distance_matches_scipy_sqrtm():
  rng = np.random.default_rng(0)
  for d in (1, 3, 16):
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    cov1, cov2 = _random_cov(rng, d), _random_cov(rng, d)
    want = _fd_reference(mu1, cov1, mu2, cov2)
    got = snp.frechet_distance(mu1, cov1, mu2, cov2)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert got == pytest.approx(snp.frechet_distance(mu2, cov2, mu1, cov1))


def test_frechet_distance_diagonal_closed_form_and_singular():
  # Diagonal covariances commute: FD = |mu1 - mu2|^2 + sum (sqrt a -
  # sqrt b)^2, also when some variances are 0 (rank-deficient).
  a, b = np.array([4.0, 0.0, 1.0, 9.0]), np.array([1.0, 2.0, 0.0, 9.0])
  mu1, mu2 = np.array([1.0, 2.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 3.0])
  want = 1 + 4 + 9 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = snp.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  assert got == pytest.approx(want, rel=1e-12)


def test_frechet_distance_is_zero_for_identical_statistics():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5, 12))  # fewer samples than dimensions: singular
  mu, cov = snp.gaussian_stats(x)
  assert np.linalg.matrix_rank(cov) < 12
  assert snp.frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-10)
  assert snp.features_fd(x, x) == pytest.approx(0, abs=1e-10)


def test_gaussian_stats_is_mean_and_unbiased_covariance():
  x = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
  mu, cov = snp.gaussian_stats(x)
  assert mu.dtype == cov.dtype == np.float64
  np.testing.assert_allclose(mu, x.mean(0, dtype=np.float64), rtol=1e-12)
  np.testing.assert_allclose(cov, np.cov(x.astype(np.float64).T), rtol=1e-12)
  with pytest.raises(ValueError, match="n >= 2"):
    snp.gaussian_stats(x[:1])


@pytest.mark.parametrize("exact", [True, False])
def test_balanced_kmeans_sizes_and_separated_blobs(exact, monkeypatch):
  if not exact:
    monkeypatch.setattr(snp, "EXACT_ASSIGN_MAX", 0)  # the greedy path
  rng = np.random.default_rng(3)
  x = rng.normal(size=(62, 5))
  sizes = np.bincount(snp.balanced_kmeans(x, 6, seed=0), minlength=6)
  assert sorted(sizes) == [10, 10, 10, 10, 11, 11]
  sizes = np.bincount(snp.balanced_kmeans(x[:60], 6, seed=1), minlength=6)
  assert (sizes == 10).all()
  # Three far blobs of 10 (plain k-means would also find them): recovered.
  blobs = np.repeat(np.eye(3) * 50, 10, axis=0) + rng.normal(size=(30, 3))
  labels = snp.balanced_kmeans(blobs, 3, seed=0)
  for b in range(3):
    assert len(set(labels[b * 10 : (b + 1) * 10])) == 1
  assert len(set(labels)) == 3


def _synthetic_pool(rng, *, clusters=6, ids=8, images=10, d=4):
  """Identities around `clusters` far-apart centres; the target is new
  identities of cluster 2. Returns feats, owner, target, ids of cluster 2."""
  centres = rng.normal(size=(clusters, d)) * 10

  def draw(c, n_ids):
    means = centres[c] + rng.normal(size=(n_ids, d))
    return means[:, None] + rng.normal(size=(n_ids, images, d))

  feats = np.concatenate([draw(c, ids) for c in range(clusters)])  # [m,i,d]
  owner = np.repeat(np.arange(clusters * ids), images)
  target = draw(2, 40).reshape(-1, d)
  return feats.reshape(-1, d), owner, target, np.arange(2 * ids, 3 * ids)


def test_search_picks_the_cluster_drawn_from_the_target():
  rng = np.random.default_rng(4)
  feats, owner, target, wanted = _synthetic_pool(rng)
  sel = snp.select("snp", feats, owner, target, clusters=6, seed=0)
  assert len(sel.prefix) == 1 and sel.order[0] == sel.prefix[0]
  np.testing.assert_array_equal(sel.searched, wanted)
  np.testing.assert_array_equal(sel.chosen, wanted)  # no budget: all of it
  assert sel.cluster_fd[sel.prefix[0]] == sel.cluster_fd.min()
  assert sel.union_fd == pytest.approx(sel.prefix_fd.min())
  # Far better than the pool at large.
  everything = snp.select("all", feats, owner, target)
  assert sel.chosen_fd < everything.chosen_fd / 10
  report = sel.report()
  assert "searched set: the first 1 clusters" in report and "8 ids" in report


def test_budget_prune_random_and_fill():
  rng = np.random.default_rng(5)
  feats, owner, target, wanted = _synthetic_pool(rng)
  pruned = snp.select("snp", feats, owner, target, budget=5, clusters=6)
  assert len(pruned.chosen) == 5 and set(pruned.chosen) <= set(wanted)
  again = snp.select("snp", feats, owner, target, budget=5, clusters=6)
  np.testing.assert_array_equal(again.chosen, pruned.chosen)  # seeded
  # A budget above the searched set: official keeps the set, fill tops up.
  small = snp.select("snp", feats, owner, target, budget=20, clusters=6)
  np.testing.assert_array_equal(small.chosen, wanted)
  full = snp.select(
    "snp", feats, owner, target, budget=20, clusters=6, fill=True
  )
  assert len(full.chosen) == 20 and set(wanted) <= set(full.chosen)
  rand = snp.select("random", feats, owner, target, budget=20, seed=1)
  assert len(rand.chosen) == len(set(rand.chosen)) == 20
  assert rand.images == 20 * 10
  assert len(snp.select("all", feats, owner, target).chosen) == 48
  with pytest.raises(ValueError, match="budget=49"):
    snp.select("random", feats, owner, target, budget=49)
  with pytest.raises(ValueError, match="budget=0"):
    snp.select("random", feats, owner, target)
  with pytest.raises(ValueError, match="method='best'"):
    snp.select("best", feats, owner, target)


@pytest.fixture(scope="module")
def bundled_selection(tmp_path_factory):
  records = selection.read_pool(POOL)
  target = selection.target_images(TARGET)
  fn, size, _ = selection.feature_fn()  # pixels at 8x4
  sel = selection.select_from_files(
    "snp", records, target, fn, image_size=size, budget=20, clusters=6,
    fill=True,
  )  # fmt: skip
  out = tmp_path_factory.mktemp("sel") / "snp"
  n = selection.write_image_folder(records, sel, os.fspath(out))
  return records, sel, out, n


def test_end_to_end_on_bundled_images(bundled_selection, tmp_path):
  records, sel, out, n = bundled_selection
  names, owner = selection.identities(records)
  assert len(records) == 992 + 32 and len(names) == 62 + 16
  assert len(sel.chosen) == 20 and n == np.isin(owner, sel.chosen).sum()
  folders = sorted(p.name for p in out.iterdir() if p.is_dir())
  assert len(folders) == 20
  assert {f.split("_")[0] for f in folders} <= {"pku", "market1501"}
  saved = json.loads((out / "selection.json").read_text())
  assert saved["identities"] == [names[i] for i in sel.chosen]
  assert (out / "selection.txt").read_text().startswith("selection snp")
  link = next(next(out.glob("pku_reid_*")).iterdir())
  assert link.is_symlink() and os.path.isabs(os.readlink(link))
  # The supervised recipe's input reads it: 20 ids, every image.
  builder = data.prepare("image_folder", data_dir=tmp_path, manual_dir=out)
  meta = data.split_meta(builder, "train")
  assert len(meta["id"]) == n and len(np.unique(meta["label"])) == 20
  with pytest.raises(DataError, match="exists"):
    selection.write_image_folder(records, sel, os.fspath(out))


def test_untrained_encoder_features_are_fixed_unit_vectors():
  kw = dict(encoder="resnet_tiny", image_size=(16, 8), seed=3)
  fn, size, about = selection.feature_fn(**kw)
  assert size == (16, 8) and "untrained resnet_tiny" in about
  paths = selection.target_images(TARGET)[:5]
  feats = selection.features_of(paths, fn, size)
  assert feats.dtype == np.float32 and feats.shape[0] == 5
  np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
  again = selection.features_of(paths, selection.feature_fn(**kw)[0], size)
  np.testing.assert_allclose(again, feats, atol=1e-6)


def test_bad_inputs_name_the_value(tmp_path):
  with pytest.raises(DataError, match="empty"):
    selection.read_pool({})
  with pytest.raises(DataError, match="nowhere"):
    selection.read_pool({"x": os.fspath(tmp_path / "nowhere")})
  with pytest.raises(DataError, match="target=.*nowhere"):
    selection.target_images(os.fspath(tmp_path / "nowhere"))
  records = selection.read_pool({"m": POOL["market1501"]})
  target = selection.target_images(TARGET)
  with pytest.raises(DataError, match="ids=17: the pool has 16"):
    selection.select_from_files(
      "random", records, target, None, image_size=(8, 4), budget=17
    )


def test_materialize_caches_by_config(tmp_path):
  from idlearn.training import loop

  cfg = dict(
    name="random", pool=POOL, target=TARGET, ids=5, seed=0,
  )  # fmt: skip
  root = tmp_path / "selection"  # where the loop keeps them
  folder, report = selection.materialize(cfg, root)
  assert "chosen: 5 of 78 ids" in report and os.path.isdir(folder)
  assert selection.materialize(cfg, root) == (folder, "")  # reused
  other, _ = selection.materialize({**cfg, "seed": 1}, root)
  assert other != folder and os.path.isdir(other)
  with pytest.raises(ValueError, match="config.select.features: unknown"):
    selection.materialize({**cfg, "features": {"size": 8}}, root)
  # The loop trains on the folder; a manual_dir of the user's conflicts.
  run = {"total_steps": 1, "select": cfg, "input": {"name": "x"}}
  got = loop._with_selection(run, os.fspath(tmp_path))
  assert got["input"]["manual_dir"] == folder
  assert got["input"]["name"] == "image_folder"
  assert got["input"]["data_dir"] == os.fspath(root / "tfds")
  run["input"]["manual_dir"] = "/data"
  with pytest.raises(ValueError, match="leave config.input.manual_dir"):
    loop._with_selection(run, os.fspath(tmp_path))


def _cli(*args):
  env = one_device_env(PYTHONPATH=os.fspath(_ROOT))
  return subprocess.run(
    [sys.executable, "-m", "idlearn.main", "select", *args],
    cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300,
  )  # fmt: skip


@pytest.mark.slow
def test_select_command(tmp_path):
  pool = [f"--pool={k}={v}" for k, v in POOL.items()]
  args = [*pool, f"--target={TARGET}", "--clusters=6", "--fill"]
  out = _cli(*args, "--ids=20", f"--out={tmp_path / 'sel'}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "chosen: 20 of 78 ids" in out.stdout
  assert len([p for p in (tmp_path / "sel").iterdir() if p.is_dir()]) == 20
  out = _cli(*args, "--ids=500", f"--out={tmp_path / 'big'}")
  assert out.returncode != 0 and not (tmp_path / "big").exists()
  assert out.stderr.strip().splitlines()[-1] == (
    "error: ids=500: the pool has 78 identities"
  )

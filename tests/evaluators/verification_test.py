"""verification.evaluate against scikit-learn (ROC) and a brute-force
float64 threshold search; the LFW pairs parser and the pairs generator."""

import numpy as np
import pytest
from sklearn import metrics

from idlearn.evaluators import pairs, verification


def _pairs(seed, n=400, d=8, sep=1.2):
  rng = np.random.default_rng(seed)
  same = np.tile(np.repeat([True, False], 20), n // 40)  # LFW-style folds
  a = rng.standard_normal((n, d))
  b = np.where(same[:, None], sep * a, 0) + rng.standard_normal((n, d))
  return a, b, same


def _cos(a, b):
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  return (a * b).sum(1)


def ref_kfold(s, same, folds):
  """Tries every candidate threshold on the training folds, lowest first."""
  fold = np.repeat(np.arange(folds), len(s) // folds)
  accs = []
  for k in range(folds):
    tr, te = fold != k, fold == k
    u = np.unique(s[tr])
    cands = [u[0] - 1.0, *((u[:-1] + u[1:]) / 2), u[-1] + 1.0]
    train_acc = [np.mean((s[tr] >= t) == same[tr]) for t in cands]
    t = cands[int(np.argmax(train_acc))]
    accs.append(np.mean((s[te] >= t) == same[te]))
  return np.mean(accs), np.std(accs)


def test_matches_sklearn_and_brute_force():
  a, b, same = _pairs(0)
  s = _cos(a, b)
  out = verification.evaluate(a, b, same, folds=10)
  acc, std = ref_kfold(s, same, 10)
  assert out["accuracy"] == pytest.approx(acc, abs=1e-12)
  assert out["accuracy_std"] == pytest.approx(std, abs=1e-12)
  assert 0.6 < acc < 0.95
  assert out["roc_auc"] == pytest.approx(metrics.roc_auc_score(same, s))
  fpr, tpr, _ = metrics.roc_curve(same, s)
  for far in (1e-1, 1e-2, 1e-3):
    want = tpr[fpr <= far + 1e-12].max()
    assert out["tar_at_far"][far] == pytest.approx(want, abs=1e-12), far
  assert out["tar_at_far"][1e-1] > out["tar_at_far"][1e-3]
  assert -1 < out["threshold"] < 1


def test_hand_computed_case():
  # Scores (cosine) 0.9 0.8 0.35 | 0.3 0.2 0.1 with labels S S D | S D D, two
  # folds. Train on fold 1: best t = 0.25 (3/3) -> fold 0 gets 0.9, 0.8
  # right and 0.35 D wrong: 2/3. Train on fold 0: t = 0.575 (3/3) -> fold
  # 1: 0.3 S wrong, 0.2 D, 0.1 D right: 2/3.
  s = np.array([0.9, 0.8, 0.35, 0.3, 0.2, 0.1])
  a = np.stack([np.ones_like(s), np.zeros_like(s)], 1)
  b = np.stack([s, np.sqrt(1 - s**2)], 1)  # cos(a_i, b_i) = s_i
  same = np.array([1, 1, 0, 1, 0, 0], bool)
  out = verification.evaluate(a, b, same, folds=2)
  assert out["accuracy"] == pytest.approx(2 / 3)
  assert out["threshold"] == pytest.approx((0.25 + 0.575) / 2)
  # 9 (pos, neg) orderings: 0.3 < 0.35 is the only wrong one -> AUC 8/9.
  assert out["roc_auc"] == pytest.approx(8 / 9)
  # FAR 1e-1 of 3 negatives allows none: t > 0.35 -> TAR 2/3.
  assert out["tar_at_far"][0.1] == pytest.approx(2 / 3)


def test_fold_ids_override():
  a, b, same = _pairs(1)
  fold = np.repeat(np.arange(10), 40)
  want = verification.evaluate(a, b, same)
  got = verification.evaluate(a, b, same, folds=3, fold_ids=fold)
  assert got["accuracy"] == want["accuracy"]


def test_bad_inputs():
  a, b, same = _pairs(2)
  with pytest.raises(ValueError, match="same must have shape"):
    verification.evaluate(a, b, same[:-1])
  with pytest.raises(ValueError, match="emb2"):
    verification.evaluate(a, b[:, :3], same)
  bad = a.copy()
  bad[1, 1] = np.nan
  with pytest.raises(ValueError, match="emb1 contains NaN"):
    verification.evaluate(bad, b, same)
  with pytest.raises(ValueError, match="both"):
    verification.evaluate(a, b, np.ones_like(same))
  with pytest.raises(ValueError, match="emb1 must be a non-empty"):
    verification.evaluate(a[:0], b[:0], same[:0])


def test_parse_lfw_pairs(tmp_path):
  path = tmp_path / "pairs.txt"
  path.write_text(
    "2\t2\nAbel\t1\t3\nBo_Li\t2\t4\nAbel\t1\tCy\t2\nBo_Li\t1\tCy\t1\n"
    "Cy\t1\t2\nDee\t1\t3\nAbel\t2\tDee\t1\nBo_Li\t3\tCy\t2\n"
  )
  got = pairs.parse_lfw_pairs(path)
  np.testing.assert_array_equal(got["same"], [1, 1, 0, 0] * 2)
  np.testing.assert_array_equal(got["fold"], [0, 0, 0, 0, 1, 1, 1, 1])
  assert got["path1"][1] == "Bo_Li/Bo_Li_0002.jpg"
  assert got["path2"][1] == "Bo_Li/Bo_Li_0004.jpg"
  assert got["path2"][7] == "Cy/Cy_0002.jpg"
  assert got["name1"][6] == "Abel" and got["index2"][6] == 1
  path.write_text("1\t2\nAbel\t1\t3\nBo\t2\t4\nAbel\t1\tCy\nBo\t1\tCy\t1\n")
  with pytest.raises(ValueError, match="line 4"):
    pairs.parse_lfw_pairs(path)


def test_make_pairs_balanced_unique_seeded():
  ids = np.repeat(np.arange(29, 41), 10)  # AT&T held-out subjects s29..s40
  got = pairs.make_pairs(ids, folds=10, pairs_per_fold=60, seed=3)
  i, j, same, fold = got["index1"], got["index2"], got["same"], got["fold"]
  assert len(i) == 600 and (i < j).all()
  np.testing.assert_array_equal(same, ids[i] == ids[j])
  for k in range(10):
    assert same[fold == k].sum() == 30 and (~same[fold == k]).sum() == 30
  assert len(set(zip(i, j, strict=True))) == 600
  again = pairs.make_pairs(ids, folds=10, pairs_per_fold=60, seed=3)
  np.testing.assert_array_equal(again["index1"], i)
  other = pairs.make_pairs(ids, folds=10, pairs_per_fold=60, seed=4)
  assert not np.array_equal(other["index1"], i)
  # The list feeds verification.evaluate fold by fold.
  np.testing.assert_array_equal(fold, np.repeat(np.arange(10), 60))
  with pytest.raises(ValueError, match="540 same-identity pairs"):
    pairs.make_pairs(ids, folds=10, pairs_per_fold=200)

"""knn.evaluate against lightly's knn_predict (the InstDisc/MoCo monitor,
torch) and a float64 NumPy loop."""

import numpy as np
import pytest
import torch
from peers import peer_module

from idlearn.evaluators import knn, neighbors


def _lightly_knn_predict():
  return peer_module("lightly", "utils/benchmarking/knn.py").knn_predict


def _classes(seed, n, c=7, d=6, noise=1.0):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((c, d)) * 1.5
  y = rng.integers(0, c, n)
  return centres[y] + noise * rng.standard_normal((n, d)), y


def ref_knn_scores(train, y, test, k, t, c):
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  test = test / np.linalg.norm(test, axis=1, keepdims=True)
  out = np.zeros((len(test), c))
  for i, q in enumerate(test):
    sim = train @ q
    for j in np.argsort(-sim)[:k]:
      out[i, y[j]] += np.exp(sim[j] / t)
  return out


def test_knn_matches_lightly_and_reference(monkeypatch):
  rng = np.random.default_rng(9)
  train, y = _classes(0, 300)
  train *= rng.uniform(0.5, 2.0, (300, 1))  # norms must not matter
  test, yt = _classes(0, 300)
  test, yt = test[150:], yt[150:]
  monkeypatch.setattr(neighbors, "_CHUNK_ELEMENTS", 300 * 16)  # 10 chunks
  got = knn.evaluate(train, y, test, yt, k=20, temperature=0.07)
  scores = knn.predict_scores(train, y, test, k=20, temperature=0.07)
  want = ref_knn_scores(train, y, test, 20, 0.07, 7)
  np.testing.assert_allclose(scores, want, rtol=1e-4)
  unit = torch.nn.functional.normalize
  pred = _lightly_knn_predict()(
    unit(torch.tensor(test, dtype=torch.float32), dim=1),
    unit(torch.tensor(train, dtype=torch.float32), dim=1).T,
    torch.tensor(y),
    num_classes=7,
    knn_k=20,
    knn_t=0.07,
  ).numpy()
  assert got["top1"] == pytest.approx(np.mean(pred[:, 0] == yt))
  assert got["top5"] == pytest.approx(
    np.mean((pred[:, :5] == yt[:, None]).any(1))
  )
  assert 0.4 < got["top1"] < 0.95


def test_knn_faiss_path_matches_exact(monkeypatch):
  pytest.importorskip("faiss")
  train, y = _classes(2, 600)
  test, yt = _classes(3, 200)
  monkeypatch.setattr(knn, "_QUERY_ELEMENTS", 20 * 64)  # 64-query blocks
  want = knn.predict_scores(train, y, test, k=20, temperature=0.07)
  want_acc = knn.evaluate(train, y, test, yt, k=20)
  monkeypatch.setattr(neighbors, "FAISS_MIN_PAIRS", 0)  # faiss from here
  assert neighbors.choose_backend(200, 600) == "faiss"
  got = knn.predict_scores(train, y, test, k=20, temperature=0.07)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert knn.evaluate(train, y, test, yt, k=20) == want_acc


def test_knn_bad_inputs():
  x, y = _classes(1, 20)
  with pytest.raises(ValueError, match="train_labels"):
    knn.evaluate(x, y[:-1], x, y)
  bad = x.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="test_feats contains NaN"):
    knn.evaluate(x, y, bad, y)
  with pytest.raises(ValueError, match="train_feats must be a non-empty"):
    knn.evaluate(x[:0], y[:0], x, y)

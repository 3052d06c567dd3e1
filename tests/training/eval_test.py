"""Evaluators of the train loop: tracklet pooling, camera centering, face
verification, against NumPy references and the evaluators they call."""

import jax
import numpy as np

from idlearn import data
from idlearn.evaluators import verification
from idlearn.training import eval as eval_lib
from idlearn.training import model as model_lib
from idlearn.training import state as state_lib


def test_pool_tracklets_averages_unit_frame_features():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(7, 3))
  split = {
    "tracklet": np.array([4, 4, 1, 1, 1, 9, 4]),
    "id": np.array([20, 20, 10, 10, 10, 30, 20]),
    "cam": np.array([2, 2, 0, 0, 0, 5, 2]),
  }
  pooled, ids, cams = eval_lib.pool_tracklets(feats, split)
  unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  for row, t in enumerate([1, 4, 9]):  # sorted tracklet order
    np.testing.assert_allclose(
      pooled[row], unit[split["tracklet"] == t].mean(0), rtol=1e-6
    )
  np.testing.assert_array_equal(ids, [10, 20, 30])
  np.testing.assert_array_equal(cams, [0, 2, 5])


def test_center_cameras_subtracts_each_cameras_mean():
  rng = np.random.default_rng(1)
  qf, gf = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
  qc, gc = np.array([0, 1, 0, 1]), np.array([1, 1, 0, 0, 0])
  q2, g2 = eval_lib.center_cameras(qf, qc, gf, gc)
  u = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  pool, cams = np.concatenate([u(qf), u(gf)]), np.concatenate([qc, gc])
  for c in (0, 1):
    np.testing.assert_allclose(
      q2[qc == c], u(qf)[qc == c] - pool[cams == c].mean(0), rtol=1e-5
    )
    np.testing.assert_allclose(
      g2[gc == c], u(gf)[gc == c] - pool[cams == c].mean(0), rtol=1e-5
    )
  q3, g3 = eval_lib.center_cameras(qf, qc, qf, qc, same=True)
  np.testing.assert_allclose(q3, g3)
  np.testing.assert_allclose(q3[qc == 0].mean(0), 0.0, atol=1e-6)


def test_verification_evaluator_scores_the_pairs_of_the_held_out_subjects():
  model = model_lib.make_model(
    {"encoder": "resnet_tiny", "head": "embedding", "proj_out": 8}
  )
  size = (32, 24)
  x = np.zeros((1, *size, 3), np.float32)
  variables = model.init(jax.random.PRNGKey(0), x)
  st = state_lib.create(variables, _NoOpt(), jax.random.PRNGKey(1))
  (ev,) = eval_lib.make_evaluators(
    {"att": {"type": "verification", "data": "att_faces", "image_size": size}},
    model,
  )
  got = ev.run(st)
  pairs = data.verification_pairs("att_faces")
  images = data.load_split("att_faces", "test", image_size=size)["image"]
  assert len(images) == 120 and len(pairs["same"]) == 600  # s29..s40
  feats = eval_lib.extract(model, variables, images, size=size)
  want = verification.evaluate(
    feats[pairs["index1"]], feats[pairs["index2"]], pairs["same"], folds=10
  )
  assert got["eval/att/accuracy"] == want["accuracy"]
  assert got["eval/att/roc_auc"] == want["roc_auc"]
  assert got["eval/att/tar@far=0.01"] == want["tar_at_far"][1e-2]
  # flip_test: each image's unit feature plus its mirror's
  (ev,) = eval_lib.make_evaluators(
    {"att": {"type": "verification", "data": "att_faces", "image_size": size,
             "flip_test": True}},
    model,
  )  # fmt: skip
  got = ev.run(st)
  mirror = eval_lib.extract(model, variables, images[:, :, ::-1], size=size)
  unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)
  both = unit(feats) + unit(mirror)
  want = verification.evaluate(
    both[pairs["index1"]], both[pairs["index2"]], pairs["same"], folds=10
  )
  assert got["eval/att/accuracy"] == want["accuracy"]


class _NoOpt:
  def init(self, params):
    return ()

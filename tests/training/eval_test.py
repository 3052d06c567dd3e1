"""Evaluators of the train loop: tracklet pooling, camera centering, face
verification, against NumPy references and the evaluators they call."""

import jax
import numpy as np
import pytest
from fake_setup import fake_setup

from idlearn import data, encoders, methods, sharding
from idlearn.evaluators import features, verification
from idlearn.inference.features import FeatureFn
from idlearn.training import encoder as encoder_lib
from idlearn.training import eval as eval_lib
from idlearn.training import state as state_lib


def test_pool_tracklets_averages_unit_frame_features():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(7, 3))
  split = {
    "tracklet": np.array([4, 4, 1, 1, 1, 9, 4]),
    "id": np.array([20, 20, 10, 10, 10, 30, 20]),
    "cam": np.array([2, 2, 0, 0, 0, 5, 2]),
  }
  pooled, ids, cams = features.pool_tracklets(feats, split)
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
  q2, g2 = eval_lib._centered(qf, qc, gf, gc, same=False)
  u = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  pool, cams = np.concatenate([u(qf), u(gf)]), np.concatenate([qc, gc])
  for c in (0, 1):
    np.testing.assert_allclose(
      q2[qc == c], u(qf)[qc == c] - pool[cams == c].mean(0), rtol=1e-5
    )
    np.testing.assert_allclose(
      g2[gc == c], u(gf)[gc == c] - pool[cams == c].mean(0), rtol=1e-5
    )
  q3, g3 = eval_lib._centered(qf, qc, qf, qc, same=True)
  np.testing.assert_allclose(q3, g3)
  np.testing.assert_allclose(q3[qc == 0].mean(0), 0.0, atol=1e-6)


def _facenet_run(size):
  """A FaceNet method on the tiny ResNet, its state and state features."""
  setup = fake_setup(
    mesh=sharding.make_data_mesh(),
    make_encoder=lambda: encoders.get_encoder("resnet_tiny"),
    dtype=np.float32,
    input={"name": "att_faces"},
    total_steps=1,
    num_classes=lambda: 28,
  )
  method = methods.make_method({"name": "facenet", "neck_dim": 8}, setup)
  network = method.network()
  x = np.zeros((1, *size, 3), np.float32)
  variables = network.init(jax.random.PRNGKey(0), x)
  st = state_lib.create(variables, _NoOpt(), jax.random.PRNGKey(1))
  return network, variables, st, encoder_lib.RunEncoder(method, setup.mesh)


def test_verification_evaluator_scores_the_pairs_of_the_held_out_subjects():
  size = (32, 24)
  network, variables, st, feats_of = _facenet_run(size)
  (ev,) = eval_lib.make_evaluators(
    {"att": {"type": "verification", "data": "att_faces", "image_size": size}},
    feats_of,
  )
  got = ev.run(st)
  pairs = data.verification_pairs("att_faces")
  images = data.load_split("att_faces", "test", image_size=size)["image"]
  assert len(images) == 120 and len(pairs["same"]) == 600  # s29..s40
  # Reference features: the whole network (embedding head included).
  extract = FeatureFn(network, image_size=size, outputs=("eval",))
  feats = extract(variables, images)["eval"]
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
    feats_of,
  )  # fmt: skip
  got = ev.run(st)
  mirror = extract(variables, images[:, :, ::-1])["eval"]
  both = features.unit(feats) + features.unit(mirror)
  want = verification.evaluate(
    both[pairs["index1"]], both[pairs["index2"]], pairs["same"], folds=10
  )
  assert got["eval/att/accuracy"] == want["accuracy"]
  # one compiled feature function served both evaluators (same shapes)
  assert len(feats_of._fns) == 1


def test_evaluator_fields_are_per_type():
  _, _, _, feats_of = _facenet_run((32, 24))
  with pytest.raises(ValueError, match="unknown field.*folds"):
    eval_lib.make_evaluators(
      {"q": {"type": "reid", "data": "pku_reid", "folds": 10}}, feats_of
    )
  with pytest.raises(ValueError, match="is not one of"):
    eval_lib.make_evaluators({"q": {"type": "lfw", "data": "x"}}, feats_of)


class _NoOpt:
  def init(self, params):
    return ()

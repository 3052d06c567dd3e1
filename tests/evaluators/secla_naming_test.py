"""Face naming accuracy (evaluators.naming) by hand, and the naming
evaluator of the train loop on given groups and a fake method."""

import types

import numpy as np
import pytest

from idlearn.data import secla_groups as sg
from idlearn.evaluators import naming
from idlearn.training import eval as eval_lib

# 3 images; names 0 (NONAME), 1, 2, 3 as unit axes of R^4
NAMES = np.eye(4)
FACES = np.array([[0, 1.0, 0.1, 0], [0, 0, 0, 1.0], [0, -1.0, -1.0, 0]])


def test_each_face_gets_its_best_caption_name_or_noname():
  faces = np.array([[0, 1, -1], [2, -1, -1], [1, 0, -1]])
  names = np.array([[0, 1, 3], [0, 1, 2], [0, 2, -1]])
  truth = np.array([[1, 3, -1], [0, -1, -1], [0, 0, -1]])
  pred = naming.predict(FACES, NAMES, faces, names)
  # group 2: face 1 scores 0 with every caption name -> NONAME; face 0
  # scores 0.1 with name 2 (its caption lacks name 1)
  np.testing.assert_array_equal(pred, [[1, 3, -1], [0, -1, -1], [0, 2, -1]])
  res = naming.evaluate(FACES, NAMES, faces, names, truth)
  assert res["accuracy"] == pytest.approx(4 / 5)
  assert res["named_accuracy"] == 1.0
  assert res["noname_accuracy"] == pytest.approx(2 / 3)
  assert res["chance"] == pytest.approx((1 / 3 * 3 + 1 / 2 * 2) / 5)
  no_noname = naming.evaluate(FACES, NAMES, faces[:1], names[:1], truth[:1])
  assert np.isnan(no_noname["noname_accuracy"])


class _Features:
  """A RunEncoder stand-in: "emb" = the images' first pixel."""

  def __init__(self, method):
    self.method = method

  def __call__(self, state, images, **kw):
    return {"emb": images[:, 0, 0].astype(np.float32)}


def _evaluator(method, **cfg):
  (ev,) = eval_lib.make_evaluators(
    {"naming": {"type": "naming", "data": "att_faces", **cfg}},
    _Features(method),
  )
  return ev


def test_the_evaluator_reports_held_out_and_training_groups():
  labels = np.repeat(np.arange(6), 4).astype(np.int32)
  cfg = dict(groups=40, test_groups=30, max_faces=2, distractors=1,
             test_per_subject=1)  # fmt: skip
  images = np.zeros((24, 1, 1, 3), np.uint8)
  images[:, 0, 0, 0] = labels + 1  # each image's name id, as its "feature"

  def perfect(params, emb):  # names: one-hot axes; faces: their name's axis
    assert params == "params"
    return np.eye(7)[emb[:, 0].astype(int)], np.eye(7)

  method = types.SimpleNamespace(name="x", naming_embeddings=perfect)
  ev = _evaluator(method, groups=cfg)
  ev._data = (images, sg.build(labels, cfg))
  state = types.SimpleNamespace(params="params", ema_params=None)
  out = ev.run(state)
  # a face whose name is dropped scores 0 with every caption name: NONAME
  assert out["eval/naming/accuracy"] == 1.0
  assert out["eval/naming/train/accuracy"] == 1.0
  assert 0 < out["eval/naming/chance"] < 1
  assert "eval/naming/noname_accuracy" in out


def test_the_evaluator_needs_a_naming_method_and_no_flip_test():
  with pytest.raises(ValueError, match="flip_test = True"):
    _evaluator(None, flip_test=True)
  ev = _evaluator(types.SimpleNamespace(name="simclr"))
  with pytest.raises(ValueError, match="needs a method that embeds names"):
    ev.run(None)
  with pytest.raises(ValueError, match="evals.naming.groups: unknown field"):
    _evaluator(None, groups={"faces": 2})

"""idlearn.load: paths and checkpoints it accepts or names in its errors;
images prepared exactly as the data loaders decode them."""

import io
import os

import numpy as np
import pytest
from PIL import Image

import idlearn
from idlearn import errors
from idlearn.data import sources
from idlearn.inference import Embedder
from idlearn.pretrained.checkpoint import DEFAULT_PREPROCESSING


def test_a_path_that_is_neither_or_an_unknown_step_is_named(tmp_path):
  with pytest.raises(errors.CheckpointError, match="neither a training"):
    idlearn.load(tmp_path)
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  (tmp_path / "checkpoints" / "8").mkdir()
  with pytest.raises(errors.CheckpointError, match=r"available are \[4, 8\]"):
    idlearn.load(tmp_path, checkpoint=5)
  with pytest.raises(errors.CheckpointError, match="spec.json"):
    idlearn.load(tmp_path, checkpoint=8)


def test_images_prepared_like_the_loaders(tmp_path):
  """Arrays of any size, grey images, files by content: the pixels the
  data loaders decode (PIL, RGB, bilinear)."""
  prep = dict(DEFAULT_PREPROCESSING, image_size=(40, 20))
  emb = Embedder(None, {}, prep)
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (70, 33, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, (50, 25), dtype=np.uint8)
  for array in (rgb, grey, grey[..., None]):
    buf = io.BytesIO()
    Image.fromarray(array.squeeze()).save(buf, "PNG")
    want = sources.decode(buf.getvalue(), (40, 20))
    np.testing.assert_array_equal(emb.prepare(array), want)
    path = tmp_path / "x.png"  # a .png holding JPEG bytes decodes too
    path.write_bytes(buf.getvalue())
    np.testing.assert_array_equal(emb.prepare(path.read_bytes()), want)
  with pytest.raises(errors.DataError, match="uint8"):
    emb.prepare(rgb.astype(np.float32))
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"no image")
  with pytest.raises(errors.DataError, match="bad.jpg: not a readable"):
    emb.embed([os.fspath(bad)])

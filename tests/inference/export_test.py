"""Exports: StableHLO reloads to the same function; ONNX (onnxruntime)
equals JAX for ResNet / IBN, OSNet and ViT encoders; preprocessing and the
flip test are inside the graph."""

import os

import jax
import numpy as np
import pytest

from idlearn import encoders
from idlearn.inference import Embedder, export
from idlearn.pretrained.checkpoint import DEFAULT_PREPROCESSING


def _moved_statistics(variables):
  """BatchNorm means and variances moved by a different amount per channel
  (the initial 0 / 1 would hide a normalisation done wrong)."""
  if "batch_stats" not in variables:
    return variables

  def move(a):
    return a + 0.1 * np.cos(np.arange(a.size)).reshape(a.shape)

  return {
    **variables,
    "batch_stats": jax.tree.map(move, variables["batch_stats"]),
  }


def _embedder(name, neck="bnneck", flip=False, size=(32, 16), **kw):
  if name.startswith("vit"):
    kw["img_size"] = size
  model = encoders.Backbone(
    encoder=encoders.get_encoder(name, **kw), neck=neck, neck_dim=8
  )
  x = np.zeros((1, *size, 3), np.float32)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
  # BatchNorm statistics away from (0, 1): a check that cannot miss them
  variables = _moved_statistics(variables)
  prep = dict(DEFAULT_PREPROCESSING, image_size=size, flip_test=flip)
  return Embedder(model, variables, prep)


def _images(n, size=(32, 16), seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)


@pytest.mark.parametrize("flip", [False, True])
def test_stablehlo_reloads_to_the_embedders_features_any_batch(tmp_path, flip):
  emb = _embedder("resnet_tiny", flip=flip)
  path = os.fspath(tmp_path / "e.shlo")
  meta = export.export(emb, path, "stablehlo")
  assert meta["bytes"] == os.path.getsize(path)
  assert (
    meta["input"]["shape"] == ["batch", 32, 16, 3] and meta["flip_test"] is flip
  )
  fn = export.load_stablehlo(path)
  for n in (1, 5):  # dynamic batch size
    x = _images(n)
    np.testing.assert_allclose(fn(x), emb.embed(x), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
  "name, kw",
  [
    ("resnet_tiny", {}),
    ("resnet_tiny_bottleneck", {"ibn": True}),  # IBN-a's instance norms
    ("osnet_ain_tiny", {}),  # OSNet's blocks, with instance norms
    ("vit_tiny", {}),
  ],
)
def test_onnx_equals_jax(tmp_path, name, kw):
  import onnxruntime as ort

  emb = _embedder(name, neck="embedding", **kw)
  path = os.fspath(tmp_path / f"{name}.onnx")
  export.export(emb, path, "onnx")
  session = ort.InferenceSession(path)
  x = _images(3, seed=1)
  got = session.run(None, {session.get_inputs()[0].name: x})[0]
  want = emb.embed(x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_unknown_format_and_missing_converter(tmp_path, monkeypatch):
  emb = _embedder("resnet_tiny")
  with pytest.raises(ValueError, match="expected one of"):
    export.export(emb, os.fspath(tmp_path / "x"), "tflite")
  import builtins

  real_import = builtins.__import__

  def no_jax2onnx(name, *args, **kw):
    if name == "jax2onnx":
      raise ImportError(name)
    return real_import(name, *args, **kw)

  monkeypatch.setattr(builtins, "__import__", no_jax2onnx)
  with pytest.raises(ImportError, match=r"idlearn\[export\]"):
    export.export(emb, os.fspath(tmp_path / "y.onnx"), "onnx")
  assert not (tmp_path / "y.onnx").exists()

"""Export an encoder for deployment: StableHLO (jax.export) or ONNX.

The exported function takes uint8 RGB images [b, h, w, 3] at the encoder's
input size (any batch size b) and returns float32 [b, d] L2-normalised
features, with the normalisation (and the flip test, when the run
evaluated with it) inside the graph: a consumer feeds decoded, resized
pixels and nothing else, so the features cannot be normalised twice or
not at all. A JSON file next to the export records the input size and the
resize to apply (bilinear), the feature and the model it came from.
"""

import json
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from idlearn.inference.embedder import Embedder

FORMATS = ("stablehlo", "onnx")


def serving_fn(embedder: Embedder) -> Callable[[jax.Array], jax.Array]:
  """uint8 [b, h, w, 3] -> float32 [b, d] unit features of `embedder`
  (normalisation and flip test inside; the same numbers as
  `embedder.embed_prepared`)."""
  prep = embedder.preprocessing
  mean = np.asarray(prep["mean"], np.float32)
  std = np.asarray(prep["std"], np.float32)
  model, variables, feature = (
    embedder.model,
    embedder.variables,
    embedder.feature,
  )

  def unit(f):
    sq = jnp.sum(f * f, axis=-1, keepdims=True)
    return f * jax.lax.rsqrt(jnp.maximum(sq, 1e-24))

  def features(x):
    x = (x.astype(jnp.float32) / 255.0 - mean) / std
    return model.apply(variables, x, train=False)[feature].astype(jnp.float32)

  def fn(images):
    f = features(images)
    if prep["flip_test"]:
      f = unit(f) + unit(features(images[:, :, ::-1]))
    return unit(f)

  return fn


def _signature(embedder: Embedder, batch: Any) -> jax.ShapeDtypeStruct:
  h, w = embedder.image_size
  return jax.ShapeDtypeStruct((batch, h, w, 3), jnp.uint8)


def _write_meta(embedder: Embedder, path: str, fmt: str, d: int) -> dict:
  h, w = embedder.image_size
  meta = {
    "format": fmt,
    "input": {
      "shape": ["batch", h, w, 3],
      "dtype": "uint8",
      "channels": "RGB",
      "resize": "bilinear to (h, w) before the call",
    },
    "output": {
      "shape": ["batch", d],
      "dtype": "float32",
      "l2_normalized": True,
    },
    "feature": embedder.feature,
    "flip_test": bool(embedder.preprocessing["flip_test"]),
    "source": embedder.source,
    "info": embedder.info,
  }
  with open(path + ".json", "w") as f:
    json.dump(meta, f, indent=2, default=float)
  return meta


def export(embedder: Embedder, path: str, fmt: str = "stablehlo") -> dict:
  """Writes `embedder` to `path` in format `fmt`, and `path`.json.

  Args:
    embedder: from `idlearn.load`.
    path: the output file.
    fmt: "stablehlo" (`jax.export`, serialised; reload with
      `load_stablehlo`) or "onnx" (through jax2onnx; needs
      `pip install 'idlearn[export]'` and `pip install --no-deps jax2onnx`).
  Returns:
    The metadata written next to it (plus "bytes": the export's size).
  Raises:
    ValueError: an unknown format.
    ImportError: the ONNX converter is missing (the message says what to
      install).
  """
  if fmt not in FORMATS:
    raise ValueError(f"format {fmt!r}: expected one of {FORMATS}")
  fn = serving_fn(embedder)
  d = jax.eval_shape(fn, _signature(embedder, 1)).shape[-1]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if fmt == "stablehlo":
    (b,) = jax.export.symbolic_shape("b")
    exported = jax.export.export(jax.jit(fn))(_signature(embedder, b))
    data = exported.serialize()
  else:
    data = _onnx_bytes(fn, embedder)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)  # never a half-written export
  meta = _write_meta(embedder, path, fmt, d)
  return {**meta, "bytes": len(data)}


def _onnx_bytes(fn: Callable, embedder: Embedder) -> bytes:
  try:
    from jax2onnx import to_onnx
  except ImportError:
    raise ImportError(
      "ONNX export needs jax2onnx: pip install 'idlearn[export]' && pip "
      "install --no-deps jax2onnx==0.17.1"
    ) from None
  # its IR serialiser warns about every shape-less constant
  logging.getLogger("onnx_ir").setLevel(logging.ERROR)
  model = to_onnx(fn, [_signature(embedder, "B")], model_name="idlearn")
  return model.SerializeToString()


def load_stablehlo(path: str) -> Callable[[np.ndarray], np.ndarray]:
  """The exported function of a StableHLO file (any batch size)."""
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  return lambda images: np.asarray(exported.call(jnp.asarray(images)))

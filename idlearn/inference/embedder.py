"""`idlearn.load`: a trained encoder as an `Embedder` of images.

  embedder = idlearn.load("runs/quickstart")          # a training workdir
  feats = embedder.embed("photos/")                   # float32 [n, d], unit
  embedder = idlearn.load("runs/x", checkpoint=1200)  # a training step
  embedder = idlearn.load("runs/x/encoder/best")      # an encoder folder

The embedder holds the retrieval encoder only (no classifier, margin
centres or projector the retrieval feature does not use) and feeds it as
the run's evaluators did: each image decoded to RGB (grey repeated), resized
bilinearly on the host to the run's input size, normalised inside the
compiled function, flip test if the run's evaluation used it.
"""

import concurrent.futures
import io
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from idlearn.data._records import find_images
from idlearn.errors import CheckpointError, DataError
from idlearn.evaluators.features import unit
from idlearn.inference.features import FeatureFn
from idlearn.pretrained import checkpoint as folders

SPEC_FILE = "spec.json"  # WORKDIR/encoder/spec.json: written at train start


class Embedder:
  """Embeds images with a retrieval encoder.

  Args:
    model: an `encoders.Backbone`.
    variables: its variables.
    preprocessing: `pretrained.checkpoint.DEFAULT_PREPROCESSING` keys.
    info: facts from training (e.g. "threshold" of verification).
    source: where it was loaded from (for messages).
  """

  def __init__(
    self,
    model: Any,
    variables: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
    source: str = "",
  ):
    self.model, self.variables = model, variables
    self.preprocessing = dict(preprocessing)
    self.info, self.source = dict(info or {}), source
    self.image_size = tuple(self.preprocessing["image_size"])
    self.feature = self.preprocessing["feature"]
    self._fns: dict[int, FeatureFn] = {}

  @property
  def threshold(self) -> float | None:
    """The verification threshold training chose (cosine similarity), if
    the run evaluated verification."""
    return self.info.get("threshold")

  def _fn(self, batch_size: int) -> FeatureFn:
    if batch_size not in self._fns:
      self._fns[batch_size] = FeatureFn(
        self.model,
        image_size=self.image_size,
        batch_size=batch_size,
        outputs=(self.feature,),
      )
    return self._fns[batch_size]

  def prepare(self, image: Any) -> np.ndarray:
    """One image (uint8 array [h, w] / [h, w, 1|3|4], PIL image, encoded
    bytes) -> uint8 [H, W, 3] at the input size, as the data loaders do."""
    if isinstance(image, bytes):
      image = Image.open(io.BytesIO(image))
    if not isinstance(image, Image.Image):
      array = np.asarray(image)
      if array.dtype != np.uint8:
        raise DataError(
          f"images must be uint8 [h, w, c] arrays, got dtype {array.dtype}"
        )
      if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
      if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] > 4):
        raise DataError(
          f"an image must be [h, w] or [h, w, c<=4], got shape {array.shape}"
        )
      image = Image.fromarray(array)
    image = image.convert("RGB")
    h, w = self.image_size
    if image.size != (w, h):
      image = image.resize((w, h), Image.BILINEAR)
    return np.asarray(image, np.uint8)

  def embed(
    self,
    images: Any,
    *,
    batch_size: int = 64,
  ) -> np.ndarray:
    """L2-normalised features of `images`.

    Args:
      images: a uint8 array [n, h, w, c] (or [n, h, w]) of any size, a
        sequence of arrays, PIL images or file paths, or a folder path (its
        images, recursively, in sorted order).
      batch_size: images per compiled call (one compilation per size).
    Returns:
      float32 [n, d].
    Raises:
      ValueError: an image that does not decode (named).
    """
    if isinstance(images, str | os.PathLike):
      images = list_images(images)
    arrays = []
    for x in self.prepare_many(images):
      if isinstance(x, Exception):
        raise x
      arrays.append(x)
    return self.embed_prepared(np.stack(arrays) if arrays else None, batch_size)

  def prepare_many(self, images: Any) -> list[Any]:
    """`prepare` of each image (file paths read), in order, decoded on a
    thread per core (PIL releases the GIL while it decodes and resizes);
    an image that fails gives its exception in its place."""

    def one(x):
      try:
        return self.prepare(_read(x))
      except (ValueError, OSError) as e:
        return e

    images = list(images)
    if len(images) < 2:
      return [one(x) for x in images]
    workers = min(len(images), len(os.sched_getaffinity(0)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      return list(pool.map(one, images, chunksize=16))

  def embed_prepared(self, x: np.ndarray | None, batch_size: int = 64):
    """Features of uint8 [n, H, W, 3] already at the input size."""
    if x is None or not len(x):
      return np.zeros((0, 0), np.float32)
    fn = self._fn(batch_size)
    flip = bool(self.preprocessing["flip_test"])
    feats = fn(self.variables, x, flip=flip)[self.feature]
    return unit(feats).astype(np.float32)


def _read(x: Any) -> Any:
  """A path -> its bytes (decoded by content); anything else unchanged."""
  if isinstance(x, str | os.PathLike):
    try:
      with open(x, "rb") as f:
        data = f.read()
      Image.open(io.BytesIO(data)).verify()
    # any decoder error: name the file
    except Exception as e:  # noqa: BLE001
      raise DataError(f"{x}: not a readable image ({e})") from None
    return data
  return x


def list_images(folder: str | os.PathLike) -> list[str]:
  """Image files under `folder` (recursively), sorted."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise DataError(f"{folder} is not a folder of images")
  return find_images(folder)


def _steps(checkpoints: str) -> list[int]:
  if not os.path.isdir(checkpoints):
    return []
  return sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())


def _from_training_checkpoint(workdir: str, step: int) -> Embedder:
  """The encoder of training checkpoint `step`, by the run's spec."""
  import orbax.checkpoint as ocp

  from idlearn.encoders.backbone import select_params

  spec_path = os.path.join(workdir, "encoder", SPEC_FILE)
  if not os.path.isfile(spec_path):
    raise CheckpointError(
      f"{workdir} has checkpoints but no {spec_path} (written when training "
      "starts): load an encoder folder instead"
    )
  with open(spec_path) as f:
    spec = json.load(f)
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(os.path.abspath(path))
  variables = {}
  params = "ema_params" if spec.get("use_ema") else "params"
  for collection, name in (("params", params), ("batch_stats",) * 2):
    tree = state.get(name) or {}
    for key in spec["backbone_path"]:
      tree = tree[key]
    if tree:
      variables[collection] = select_params(tree, spec["neck"])
  model = folders.build(spec)
  prep = {**folders.DEFAULT_PREPROCESSING, **spec["preprocessing"]}
  source = f"{workdir} (step {step})"
  return Embedder(model, variables, prep, spec.get("info"), source)


def load(path: str | os.PathLike, *, checkpoint: Any = "latest") -> Embedder:
  """A trained encoder, ready to embed images.

  Args:
    path: a training workdir or an encoder folder (`pretrained.save`).
    checkpoint: for a workdir: "latest" (its newest checkpoint), "final"
      (the encoder the finished run wrote), "best" (the best by the run's
      best_metric) or a step number.
  Returns:
    An `Embedder`.
  Raises:
    ValueError: `path` is neither; an unknown checkpoint (the message lists
      the available ones).
  """
  path = os.path.abspath(os.fspath(path))
  if folders.is_encoder_folder(path):
    return _from_folder(path)
  steps = _steps(os.path.join(path, "checkpoints"))
  named = {
    name: os.path.join(path, "encoder", name)
    for name in ("final", "best")
    if folders.is_encoder_folder(os.path.join(path, "encoder", name))
  }
  if not steps and not named:
    raise CheckpointError(
      f"{path} is neither a training workdir (no checkpoints/ or "
      "encoder/) nor an encoder folder"
    )
  if checkpoint in named:
    return _from_folder(named[checkpoint])
  if checkpoint == "latest" and steps:
    final = named.get("final")
    if final and folders.read_spec(final)["info"].get("step") == steps[-1]:
      return _from_folder(final)  # the same weights, with what was measured
    return _from_training_checkpoint(path, steps[-1])
  if checkpoint == "latest":
    return _from_folder(named.get("final") or named["best"])
  if isinstance(checkpoint, int) and checkpoint in steps:
    return _from_training_checkpoint(path, checkpoint)
  raise CheckpointError(
    f"checkpoint={checkpoint!r} is not in {path}: available are "
    f"{sorted(named) + steps} (and 'latest')"
  )


def _from_folder(path: str) -> Embedder:
  spec = folders.read_spec(path)
  model, variables = folders.load(path)
  return Embedder(model, variables, spec["preprocessing"], spec["info"], path)


def similarity(
  embedder: Embedder, a: Any, b: Any, *, batch_size: int = 64
) -> np.ndarray:
  """Cosine identity similarity of image pairs (a[i], b[i]).

  Args:
    embedder: from `load`.
    a, b: equally long image collections (see `Embedder.embed`).
  Returns:
    float32 [n] in [-1, 1].
  """
  fa = embedder.embed(a, batch_size=batch_size)
  fb = embedder.embed(b, batch_size=batch_size)
  if fa.shape != fb.shape:
    raise DataError(f"a and b must hold as many images: {len(fa)} vs {len(fb)}")
  return np.sum(fa * fb, axis=1)


def write_spec(
  workdir: str,
  spec: Mapping[str, Any],
) -> None:
  """Writes WORKDIR/encoder/spec.json (atomically)."""
  folder = os.path.join(workdir, "encoder")
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".{SPEC_FILE}.tmp")
  with open(tmp, "w") as f:
    json.dump(spec, f, indent=2, default=list)
  os.replace(tmp, os.path.join(folder, SPEC_FILE))

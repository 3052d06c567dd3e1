"""The run's retrieval encoder: its module, its variables in a train
state, its features, and the encoder folders it leaves.

The method's network holds the retrieval encoder (`encoders.Backbone`:
encoder + neck) at `method.BACKBONE`; evaluators and miners embed with that
part alone, through one compiled `inference.FeatureFn` per image size and
batch size (every evaluation and mining reuses its compilation), and the
same part is what `idlearn.load` gets back.
"""

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from idlearn import encoders, pretrained, sharding
from idlearn.encoders.backbone import select_params
from idlearn.errors import ConfigError
from idlearn.inference import embedder as embedder_lib
from idlearn.inference.features import FeatureFn


def _at(tree: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


class RunEncoder:
  """(state, uint8 images) -> {"emb", "eval"} features; encoder folders.

  Args:
    method: the run's `idlearn.methods.Method` (its neck, BACKBONE path and
      encoder).
    mesh: the data mesh.
    model_config: the resolved config.model (None when the encoder module
      was given: no encoder folder is written then).
    preprocessing: how the run feeds its evaluators (image_size, feature,
      flip_test), kept with the encoder, and "use_ema": whether the EMA
      teacher is the encoder that leaves the run.
  """

  def __init__(
    self,
    method: Any,
    mesh: Any,
    model_config: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
  ):
    self.method, self.mesh = method, mesh
    self.module = encoders.Backbone(
      encoder=method.setup.make_encoder(),
      neck=method.neck,
      neck_dim=method.neck_dim,
      dtype=method.setup.dtype,
    )
    self.model_config = model_config
    self.preprocessing = dict(preprocessing or {})
    self.use_ema = self.preprocessing.pop("use_ema", False)
    self._fns: dict[tuple, FeatureFn] = {}

  def variables(
    self,
    state: Any,
    *,
    use_ema: bool = False,
    path: tuple[str, ...] | None = None,
  ) -> dict:
    """The `Backbone` variables of `state` (its EMA teacher's if asked), at
    `path` of the network's parameters (default: the method's BACKBONE; a
    method with two encoders of one architecture names the other)."""
    params = state.ema_params if use_ema else state.params
    if params is None:
      raise ConfigError(
        "config.evals: use_ema=True but the method keeps no EMA teacher"
      )
    neck = self.method.neck
    path = self.method.BACKBONE if path is None else path
    out = {"params": select_params(_at(params, path), neck)}
    # only statistics of the backbone's own (a DINO head's BatchNorm on a
    # ViT without any leaves none)
    stats = state.batch_stats and select_params(
      _at(state.batch_stats, path), neck
    )
    if stats:
      out["batch_stats"] = stats
    return out

  def fn(self, image_size: tuple[int, int], batch_size: int) -> FeatureFn:
    """The compiled feature function for this image size and batch size."""
    key = (tuple(image_size), batch_size)
    if key not in self._fns:
      self._fns[key] = FeatureFn(
        self.module, image_size=key[0], batch_size=batch_size, mesh=self.mesh
      )
    return self._fns[key]

  def __call__(
    self,
    state: Any,
    images: np.ndarray,
    *,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 64,
    use_ema: bool = False,
    flip: bool = False,
    path: tuple[str, ...] | None = None,
  ) -> dict[str, np.ndarray]:
    """Features of uint8 [n, H, W, 3] `images` (resized to `image_size`,
    default their own size) of the encoder at `path` (see `variables`)."""
    size = image_size or images.shape[1:3]
    fn = self.fn(size, batch_size)
    variables = self.variables(state, use_ema=use_ema, path=path)
    return fn(variables, images, flip=flip)

  def _encoder_config(self) -> dict:
    cfg = self.model_config
    kw = dict(cfg["encoder_kw"])
    return {"name": cfg["encoder"], **kw, "dtype": cfg["dtype"]}

  def spec(self) -> dict | None:
    """What `idlearn.load` needs to read this run's training checkpoints."""
    if self.model_config is None:
      return None
    return {
      "encoder": self._encoder_config(),
      "neck": self.method.neck,
      "neck_dim": self.method.neck_dim,
      "backbone_path": list(self.method.BACKBONE),
      "use_ema": self.use_ema,
      "preprocessing": self.preprocessing,
    }

  def write_spec(self, workdir: str) -> None:
    spec = self.spec()
    if spec is not None:
      embedder_lib.write_spec(workdir, spec)

  def save(
    self,
    directory: str,
    state: Any,
    *,
    info: Mapping[str, Any] | None = None,
  ) -> None:
    """Writes the state's encoder as an encoder folder (replacing one)."""
    if self.model_config is None:
      return
    variables = self.variables(state, use_ema=self.use_ema)
    variables = sharding.to_host(variables)
    pretrained.save(
      os.path.abspath(directory),
      self._encoder_config(),
      variables,
      neck=self.method.neck,
      neck_dim=self.method.neck_dim,
      preprocessing=self.preprocessing,
      info=info,
      overwrite=True,
    )

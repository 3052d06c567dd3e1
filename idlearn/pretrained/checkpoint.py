"""Encoder folders: a retrieval encoder, its variables and how to feed it.

An encoder folder holds, as JSON next to the Orbax variables, everything
needed to embed images with no other file: the `get_encoder` name and
arguments, the neck (`encoders.Backbone`), the preprocessing (input size,
feature, flip test) and facts measured in training (e.g. the verification
threshold). Training writes `WORKDIR/encoder/final` (and `.../best`);
`idlearn.load` turns a folder into an `Embedder`:

  model, variables = idlearn.pretrained.load("runs/x/encoder/final")
  out = model.apply(variables, images, train=False)  # {"emb", "eval"}
"""

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from idlearn import encoders
from idlearn.errors import CheckpointError

# How images are fed to an encoder unless its folder says otherwise.
DEFAULT_PREPROCESSING = {
  "image_size": (256, 128),  # (h, w), bilinear resize on the host
  "feature": "eval",  # the Backbone output to retrieve with
  "flip_test": False,  # add the mirror image's unit feature
  "mean": (0.485, 0.456, 0.406),  # ImageNet, on [0, 1] RGB
  "std": (0.229, 0.224, 0.225),
}


def _to_json(config: Mapping[str, Any]) -> dict[str, Any]:
  """Config -> JSON-able dict; dtypes become their names."""
  out = {}
  for k, v in config.items():
    if k == "dtype":
      v = jnp.dtype(v).name
    elif isinstance(v, tuple):
      v = list(v)
    out[k] = v
  return out


def _from_json(config: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for k, v in config.items():
    if k == "dtype":
      v = jnp.dtype(v)
    elif isinstance(v, list):
      v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    out[k] = v
  return out


def build(spec: Mapping[str, Any]) -> encoders.Backbone:
  """The `encoders.Backbone` of a folder's spec ({"encoder": {"name", ...},
  "neck", "neck_dim"})."""
  model_config = spec.get("encoder")
  if not isinstance(model_config, Mapping) or "name" not in model_config:
    raise ValueError(
      "model_config must be a dict with the encoder 'name' and its "
      f"get_encoder kwargs, got {model_config!r}"
    )
  model_config = _from_json(model_config)
  kw = {k: v for k, v in model_config.items() if k != "name"}
  return encoders.Backbone(
    encoder=encoders.get_encoder(model_config["name"], **kw),
    neck=spec.get("neck", "none"),
    neck_dim=spec.get("neck_dim", 0),
    dtype=kw.get("dtype", jnp.float32),
  )


def abstract_variables(model: nn.Module) -> Any:
  """ShapeDtypeStructs of `model`'s variables (no computation)."""
  size = tuple(getattr(model.encoder, "img_size", (64, 32)))
  return jax.eval_shape(
    lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, *size, 3)), train=False
    )
  )


def save(
  directory: str | os.PathLike,
  model_config: Mapping[str, Any],
  variables: Mapping[str, Any],
  *,
  neck: str = "none",
  neck_dim: int = 0,
  preprocessing: Mapping[str, Any] | None = None,
  info: Mapping[str, Any] | None = None,
  overwrite: bool = False,
) -> None:
  """Writes an encoder folder atomically (Orbax writes, then renames).

  Args:
    directory: the folder to create.
    model_config: {"name": <get_encoder name>, **kwargs}, e.g.
      {"name": "resnet50", "last_stride": 1}.
    variables: the `encoders.Backbone` variables ({"params": {"encoder":
      ..., <neck>: ...}, "batch_stats"?}); with neck "none" the encoder's
      own variables (e.g. from `from_torch`) are accepted too.
    neck: the Backbone's neck ("none", "bnneck", "embedding").
    neck_dim: the embedding neck's width.
    preprocessing: how to feed it (keys of `DEFAULT_PREPROCESSING`).
    info: facts to keep with it (JSON-able), e.g. {"threshold": 0.41}.
    overwrite: replace an existing folder.
  Raises:
    ValueError: model_config does not build, or variables do not fit it.
  """
  variables = dict(variables)
  if neck == "none" and "encoder" not in variables.get("params", {}):
    variables = {k: {"encoder": v} for k, v in variables.items()}
  spec = {
    "encoder": _to_json(model_config),
    "neck": neck,
    "neck_dim": neck_dim,
    "preprocessing": _to_json(
      {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    ),
    "info": dict(info or {}),
  }
  model = build(spec)
  want = jax.tree.map(lambda a: a.shape, abstract_variables(model))
  have = jax.tree.map(np.shape, variables)
  if want != have:
    raise ValueError(
      f"variables do not fit model_config {dict(model_config)} with neck "
      f"{neck!r}: expected shapes {want}, got {have}"
    )
  path = os.path.abspath(os.fspath(directory))
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(
      path,
      args=ocp.args.Composite(
        config=ocp.args.JsonSave(spec),
        variables=ocp.args.StandardSave(variables),
      ),
      force=overwrite,
    )


def is_encoder_folder(directory: str | os.PathLike) -> bool:
  return os.path.isdir(os.path.join(os.fspath(directory), "config"))


def read_spec(directory: str | os.PathLike) -> dict[str, Any]:
  """The JSON spec of an encoder folder (encoder, neck, preprocessing,
  info)."""
  path = os.path.abspath(os.fspath(directory))
  if not is_encoder_folder(path):
    raise CheckpointError(
      f"{path} is not an idlearn encoder folder (no 'config' item; write "
      "one with pretrained.save)"
    )
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    spec = ckptr.restore(
      path, args=ocp.args.Composite(config=ocp.args.JsonRestore())
    )["config"]
  spec["preprocessing"] = {
    **DEFAULT_PREPROCESSING,
    **_from_json(spec.get("preprocessing", {})),
  }
  return spec


def load(
  directory: str | os.PathLike,
) -> tuple[encoders.Backbone, dict[str, Any]]:
  """Reads an encoder folder written by `save`.

  Args:
    directory: the encoder folder.
  Returns:
    (model, variables): the unbound `encoders.Backbone` (images ->
    {"emb", "eval", ...}) and its variables.
  Raises:
    ValueError: the directory is not an encoder folder.
  """
  path = os.path.abspath(os.fspath(directory))
  model = build(read_spec(path))
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(
      path,
      args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(abstract_variables(model))
      ),
    )
  return model, restored["variables"]

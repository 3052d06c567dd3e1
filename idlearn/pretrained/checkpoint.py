"""Save and load an encoder (its config and variables) with Orbax.

A checkpoint directory holds the `get_encoder` name and kwargs as JSON next
to the variables, so a notebook gets a working encoder in two lines:

  model, variables = idlearn.pretrained.load("runs/x/encoder")
  emb, _ = model.apply(variables, images, train=False)
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


def _build(model_config: Mapping[str, Any]) -> nn.Module:
  if not isinstance(model_config, Mapping) or "name" not in model_config:
    raise ValueError(
      "model_config must be a dict with the encoder 'name' and its "
      f"get_encoder kwargs, got {model_config!r}"
    )
  kw = {k: v for k, v in model_config.items() if k != "name"}
  return encoders.get_encoder(model_config["name"], **kw)


def _abstract_variables(model: nn.Module) -> Any:
  size = tuple(getattr(model, "img_size", (64, 32)))
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
  overwrite: bool = False,
) -> None:
  """Writes an encoder checkpoint atomically (Orbax writes, then renames).

  Args:
    directory: checkpoint directory to create.
    model_config: {"name": <get_encoder name>, **kwargs}, e.g.
      {"name": "resnet50", "last_stride": 1}.
    variables: the model's variables ({"params", "batch_stats"?}).
    overwrite: replace an existing checkpoint.
  Raises:
    ValueError: model_config does not build, or variables do not fit it.
  """
  model = _build(model_config)
  want = jax.tree.map(lambda a: a.shape, _abstract_variables(model))
  have = jax.tree.map(np.shape, dict(variables))
  if want != have:
    raise ValueError(
      f"variables do not fit model_config {dict(model_config)}: expected "
      f"shapes {want}, got {have}"
    )
  path = os.path.abspath(os.fspath(directory))
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(
      path,
      args=ocp.args.Composite(
        config=ocp.args.JsonSave(_to_json(model_config)),
        variables=ocp.args.StandardSave(dict(variables)),
      ),
      force=overwrite,
    )


def load(directory: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
  """Reads an encoder checkpoint written by `save`.

  Args:
    directory: the checkpoint directory.
  Returns:
    (model, variables): the unbound flax module and its variables.
  Raises:
    ValueError: the directory is not an encoder checkpoint.
  """
  path = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(os.path.join(path, "config")):
    raise ValueError(
      f"{path} is not an idlearn encoder checkpoint "
      "(no 'config' item; write one with pretrained.save)"
    )
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    config = ckptr.restore(
      path, args=ocp.args.Composite(config=ocp.args.JsonRestore())
    )["config"]
    model = _build(_from_json(config))
    restored = ckptr.restore(
      path,
      args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(_abstract_variables(model))
      ),
    )
  return model, restored["variables"]

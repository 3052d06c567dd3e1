"""config.model -> the encoder the method builds its network around."""

import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from idlearn import fields
from idlearn.errors import ConfigError

FIELDS = {
  "encoder": fields.REQUIRED,  # a name of idlearn.encoders.get_encoder
  "encoder_kw": {},  # e.g. {"last_stride": 1, "pooling": "gem"}
  "dtype": "float32",  # compute dtype; parameters stay float32
  # start the encoder from these weights (the method's heads start fresh):
  # a PyTorch state-dict file (.pt, .pth, .safetensors) or an encoder folder
  # (of the same encoder; layers it lacks that encoder_kw.after_stage
  # inserts start fresh)
  "init": "",
}
# Encoder options that insert layers; weights of the encoder without them
# fit the rest (its layers start fresh).
_INSERTED = ("after_stage",)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
  """config.model with its defaults filled in (checked)."""
  return fields.resolve(config, FIELDS, "config.model")


def encoder_factory(
  config: Mapping[str, Any], *, encoder: nn.Module | None = None
) -> tuple[Callable[[], nn.Module], Any]:
  """(() -> a fresh encoder module, compute dtype) of `config.model`.

  Args:
    config: the `config.model` group (fields in `FIELDS`).
    encoder: use clones of this module instead of `get_encoder` (tests).
  Raises:
    ValueError: an unknown encoder, encoder argument or dtype.
  """
  cfg = resolve(config)
  dtype = DTYPES.get(cfg["dtype"])
  if dtype is None:
    raise ConfigError(
      f"config.model.dtype = {cfg['dtype']!r}: expected one of {list(DTYPES)}"
    )
  if encoder is not None:
    return lambda: encoder.clone(), dtype
  from idlearn import encoders

  kw = dict(cfg["encoder_kw"])
  try:  # fail early, naming the config field
    encoders.get_encoder(cfg["encoder"], dtype=dtype, **kw)
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None
  return lambda: encoders.get_encoder(cfg["encoder"], dtype=dtype, **kw), dtype


def pretrained_encoder(config: Mapping[str, Any]) -> dict[str, Any] | None:
  """The encoder variables `config.model.init` names, or None.

  `init` is a PyTorch state-dict file (.pt / .pth through torch, or
  .safetensors) of the config's encoder architecture, converted by
  `pretrained.from_torch` (missing, unexpected or mis-shaped keys named),
  or an idlearn encoder folder (`pretrained.save`) of the same encoder.

  Raises:
    ConfigError: a missing file, or weights that do not fit the encoder.
  """
  cfg = resolve(config)
  path = cfg["init"]
  if not path:
    return None
  from idlearn import pretrained

  kw = dict(cfg["encoder_kw"])
  if os.path.isdir(path):
    if not pretrained.is_encoder_folder(path):
      raise ConfigError(
        f"config.model.init = {path!r} is a folder but not an encoder folder"
      )
    spec = pretrained.read_spec(path)
    saved = {k: v for k, v in spec["encoder"].items() if k != "dtype"}
    want = {"name": cfg["encoder"], **kw}
    for key in _INSERTED:
      if key not in saved:
        want.pop(key, None)
    if saved != _jsonish(want):
      raise ConfigError(
        f"config.model.init = {path!r} holds encoder {saved}, but "
        f"config.model asks for {want}"
      )
    _, variables = pretrained.load(path)
    return {k: v["encoder"] for k, v in variables.items()}
  if not os.path.isfile(path):
    raise ConfigError(f"config.model.init = {path!r}: no such file")
  try:
    state_dict = _read_state_dict(path)
    kw = {k: v for k, v in kw.items() if k not in _INSERTED}
    return pretrained.from_torch(cfg["encoder"], state_dict, **kw)
  except ValueError as e:
    raise ConfigError(f"config.model.init = {path!r}: {e}") from None


def _jsonish(d: Mapping[str, Any]) -> dict[str, Any]:
  """As the encoder folder's JSON stores it (tuples as lists)."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _read_state_dict(path: str) -> Mapping[str, Any]:
  if path.endswith(".safetensors"):
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise ConfigError(
        f"config.model.init = {path!r}: pip install safetensors to read it"
      ) from None
    return load_file(path)
  try:
    import torch
  except ImportError:
    raise ConfigError(
      f"config.model.init = {path!r} is a PyTorch file: install torch to "
      "read it, or convert it to .safetensors"
    ) from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model"):  # common checkpoint wrappers
    if isinstance(state, Mapping) and key in state:
      state = state[key]
  return state

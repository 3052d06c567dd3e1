"""config.model -> the encoder the method builds its network around."""

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
}
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

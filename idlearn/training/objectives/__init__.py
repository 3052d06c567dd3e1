"""config.loss -> an `Objective`: the loss on model outputs and the step's
hooks for it (extra views, EMA teacher, persistent extras).

An objective picks model outputs (one dict per view, see `model.IdModel`),
calls `idlearn.losses` inside `shard_map` over the data mesh (so in-batch
negatives and positives come from the whole global batch), and adds up the
terms. Methods differ here and in the config, never in the train loop.
"""

from collections.abc import Mapping
from typing import Any

from jax.sharding import Mesh

from idlearn.training import fields
from idlearn.training.objectives import (
  contrastive,
  distillation,
  domain,
  mixing,
  supervised,
)
from idlearn.training.objectives.base import Context, Objective

_MODULES = (supervised, contrastive, mixing, distillation, domain)
_BUILDERS = {k: v for m in _MODULES for k, v in m.BUILDERS.items()}
# name -> the fields of config.loss for it, with defaults.
FIELDS = {k: {"name": k, **v} for m in _MODULES for k, v in m.FIELDS.items()}
identity_ce = supervised.identity_ce

__all__ = ["FIELDS", "Context", "Objective", "identity_ce", "make_objective"]


def make_objective(config: Mapping[str, Any] | None, mesh: Mesh) -> Objective:
  """Builds the objective named by `config.loss.name`.

  Args:
    config: the `config.loss` group: "name" plus that loss's fields (see
      `FIELDS`; unknown fields raise ValueError listing the valid ones).
    mesh: the data mesh; cross-device losses run under `shard_map` on it.
  Returns:
    An `Objective`: objective(outs, batch, teacher=None, extras=, step=) ->
    (loss, aux), aux a flat dict of scalars.
  """
  name = fields.choice(
    (config or {}).get("name", ""), FIELDS, "config.loss.name"
  )
  cfg = fields.resolve(config, FIELDS[name], "config.loss")
  return _BUILDERS[name](cfg, mesh)

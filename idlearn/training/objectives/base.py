"""What every objective is: a loss on model outputs plus what the step must
prepare for it (extra views, an EMA teacher, state that persists).

The train step calls, in order:

  views, batch = objective.prepare(rng, views, batch)     (if given)
  teacher      = EMA model on views[:objective.teacher_views]
  loss, aux    = objective(outs, batch, teacher, extras=..., step=...)
  extras       = objective.update_extras(extras, outs, teacher, batch)

`extras` is the objective's own state inside `TrainState.extras` (DINO's
centre, DomainMix's pseudo labels); it is checkpointed with the model.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax

Outs = Sequence[Mapping[str, jax.Array]]
Aux = dict[str, jax.Array]
PyTree = Any


class Context(NamedTuple):
  """What a loss may read besides the outputs and the batch.

  Attributes:
    teacher: the EMA teacher's output dicts (one per teacher view), or None.
    extras: the objective's persistent state (see `Objective.init_extras`).
    step: int32 [] optimizer steps done before this one.
  """

  teacher: Outs | None = None
  extras: PyTree = None
  step: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
  """A training objective and the step's hooks for it.

  Attributes:
    loss: (outs, batch, ctx) -> (loss, aux); `outs` holds one output dict
      per view, `ctx` a `Context`. Runs inside the differentiated function.
    teacher_views: how many leading views the EMA teacher sees (0: none;
      the config must then set optim.ema_decay).
    prepare: (rng, views, batch) -> (views, batch), on device before the
      model (e.g. add a mixed view and its composition to the batch).
    init_extras: (output shapes of one view: {name: ShapeDtypeStruct}) ->
      the initial extras pytree.
    update_extras: (extras, outs, teacher, batch) -> new extras, after the
      loss and without gradient.
  """

  loss: Callable[..., tuple[jax.Array, Aux]]
  teacher_views: int = 0
  prepare: Callable | None = None
  init_extras: Callable[[Mapping[str, Any]], PyTree] | None = None
  update_extras: Callable | None = None

  def __call__(
    self,
    outs: Outs,
    batch: Mapping[str, jax.Array],
    teacher: Outs | None = None,
    *,
    extras: PyTree = None,
    step: jax.Array | None = None,
  ) -> tuple[jax.Array, Aux]:
    return self.loss(outs, batch, Context(teacher, extras, step))


def pick(outs: Outs, view: int, key: str) -> jax.Array:
  """outs[view][key], or a ValueError naming what the model does output."""
  if view >= len(outs):
    raise ValueError(
      f"the objective reads view {view} but the step has {len(outs)} "
      "view(s): add views to config.views"
    )
  if key not in outs[view]:
    raise ValueError(
      f"config.loss.on = {key!r} but the model outputs only "
      f"{sorted(outs[view])}"
    )
  return outs[view][key]


def need_views(name: str, outs: Outs, n: int) -> None:
  if len(outs) < n:
    raise ValueError(f"loss {name!r} needs {n} views, got {len(outs)}")

"""The pure train step shared by every method."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from idlearn.training import optim
from idlearn.training.objectives import Objective
from idlearn.training.state import TrainState

Batch = dict[str, jax.Array]
ViewsFn = Callable[[jax.Array, jax.Array], Sequence[jax.Array]]
# fold_in data of the objective's `prepare` randomness (views use 0..V-1).
_PREPARE_STREAM = 2**31 - 1


def forward_views(
  model: nn.Module,
  params: Any,
  batch_stats: Any,
  views: Sequence[jax.Array],
  *,
  train: bool,
) -> tuple[list[dict[str, jax.Array]], Any]:
  """Applies `model` to each view in turn, threading BatchNorm statistics.

  Views go through separately (not concatenated) so that BatchNorm
  normalises each view over its own global batch, as SimCLR/BYOL do, and no
  cross-device reshuffle is needed.

  Args:
    model: returns a dict of named outputs ("emb", "logits", ...).
    params, batch_stats: model variables (batch_stats may be {}).
    views: V arrays float32 [b, h, w, 3].
    train: training mode (BatchNorm uses and updates batch statistics).
  Returns:
    (list of V output dicts, batch_stats after the last view).
  """
  outs = []
  for v in views:
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    if train and batch_stats:
      out, upd = model.apply(variables, v, train=True, mutable=["batch_stats"])
      batch_stats = upd["batch_stats"]
    else:
      out = model.apply(variables, v, train=train)
    outs.append(out)
  return outs, batch_stats


def _teacher_forward(model, state, views):
  """The EMA teacher on `views`: BatchNorm normalises with the batch's own
  statistics (as DINO / BYOL teachers in train mode do); its running-stat
  updates are dropped and no gradient flows."""
  outs, _ = forward_views(
    model, state.ema_params, state.batch_stats, views, train=True
  )
  return jax.lax.stop_gradient(outs)


def train_step(
  state: TrainState,
  batch: Batch,
  *,
  model: nn.Module,
  tx: optax.GradientTransformation,
  objective: Objective,
  views_fn: ViewsFn,
  schedule: optax.Schedule | None = None,
  ema_decay: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on one global batch; pure, jit with `partial`.

  Args:
    state: the current state (donated by the caller's jit).
    batch: "image" uint8 [b, ...] plus labels ("id" [b], "cam" [b], ...).
    model: flax module returning a dict of outputs for one view.
    tx: optax transformation of the parameters.
    objective: an `objectives.Objective` (or any callable (outs, batch,
      teacher, extras=, step=) -> (loss, aux)); its hooks add views
      (`prepare`), run the EMA teacher on the first `teacher_views` views
      and update `state.extras` (`update_extras`).
    views_fn: (rng, images) -> tuple of float32 [b, h, w, 3] views; runs on
      device, randomness from `fold_in(state.rng, state.step)`.
    schedule: learning-rate schedule, only to report `lr`.
    ema_decay: step -> decay of `state.ema_params` (None: no EMA update).
  Returns:
    (new state, scalar metrics: loss, grad_norm, lr and the objective's aux).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  views = tuple(views_fn(rng, batch["image"]))
  prepare = getattr(objective, "prepare", None)
  if prepare is not None:  # its own stream: the views' draws stay as they are
    prep_rng = jax.random.fold_in(rng, _PREPARE_STREAM)
    views, batch = prepare(prep_rng, views, batch)
  teacher = None
  n_teacher = getattr(objective, "teacher_views", 0)
  if n_teacher:
    if state.ema_params is None:
      raise ValueError(
        "the objective needs an EMA teacher: set config.optim.ema_decay > 0"
      )
    teacher = _teacher_forward(model, state, views[:n_teacher])

  def loss_of(params):
    outs, stats = forward_views(
      model, params, state.batch_stats, views, train=True
    )
    loss, aux = objective(
      outs, batch, teacher, extras=state.extras, step=state.step
    )
    return loss, (aux, stats, outs)

  (loss, (aux, stats, outs)), grads = jax.value_and_grad(loss_of, has_aux=True)(
    state.params
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema_decay is not None and ema is not None:
    ema = optim.ema_update(ema, params, ema_decay(state.step))
  extras = state.extras
  update_extras = getattr(objective, "update_extras", None)
  if update_extras is not None:
    extras = update_extras(extras, jax.lax.stop_gradient(outs), teacher, batch)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
  if schedule is not None:
    metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=stats,
    opt_state=opt_state,
    ema_params=ema,
    extras=extras,
  )
  return new_state, metrics

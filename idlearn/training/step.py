"""The pure train step shared by every method."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from idlearn.training import optim
from idlearn.training.state import TrainState

Batch = dict[str, jax.Array]
# (per-view model outputs, batch, teacher outputs or None) -> (loss, aux)
Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
ViewsFn = Callable[[jax.Array, jax.Array], Sequence[jax.Array]]


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
    objective: (outs, batch, teacher) -> (loss, aux), where `outs` holds one
      output dict per view and `teacher` the EMA model's outputs (or None).
    views_fn: (rng, images) -> tuple of float32 [b, h, w, 3] views; runs on
      device, randomness from `fold_in(state.rng, state.step)`.
    schedule: learning-rate schedule, only to report `lr`.
    ema_decay: step -> decay of `state.ema_params` (None: no EMA update).
  Returns:
    (new state, scalar metrics: loss, grad_norm, lr and the objective's aux).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  views = views_fn(rng, batch["image"])
  teacher = None
  if getattr(objective, "uses_teacher", False):
    teacher, _ = forward_views(
      model, state.ema_params, state.batch_stats, views, train=False
    )
    teacher = jax.lax.stop_gradient(teacher)

  def loss_of(params):
    outs, stats = forward_views(
      model, params, state.batch_stats, views, train=True
    )
    loss, aux = objective(outs, batch, teacher)
    return loss, (aux, stats)

  (loss, (aux, stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
    state.params
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema_decay is not None and ema is not None:
    ema = optim.ema_update(ema, params, ema_decay(state.step))
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
  if schedule is not None:
    metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=stats,
    opt_state=opt_state,
    ema_params=ema,
  )
  return new_state, metrics

"""The pure train step shared by every method."""

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from idlearn.methods import Context, Method, Network
from idlearn.training.state import TrainState

Batch = dict[str, jax.Array]
# (rng, uint8 images) -> {role: tuple of float32 [b, h, w, 3] views}
ViewsFn = Callable[[jax.Array, jax.Array], Mapping[str, tuple[jax.Array, ...]]]
# fold_in data of the method's own randomness (views use 0..V-1).
_PREPARE_STREAM = 2**31 - 1
_METHOD_STREAM = 2**31 - 2


def ema_update(target: Any, online: Any, decay: jax.Array) -> Any:
  """target <- decay * target + (1 - decay) * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: decay * t + (1 - decay) * o, target, online)


def train_step(
  state: TrainState,
  batch: Batch,
  *,
  method: Method,
  network: nn.Module,
  tx: optax.GradientTransformation,
  views_fn: ViewsFn,
  schedule: optax.Schedule | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on one global batch; pure, jit with `partial`.

  Args:
    state: the current state (donated by the caller's jit).
    batch: "image" uint8 [b, ...] plus labels ("id" [b], "cam" [b], ...).
    method: the method (`idlearn.methods.Method`): its `prepare` and
      `loss`, and its EMA teacher's decay.
    network: `method.network()`, built once.
    tx: optax transformation of the parameters.
    views_fn: (rng, images) -> {role: views}; runs on device, randomness
      from `fold_in(state.rng, state.step)`.
    schedule: learning-rate schedule, only to report `lr`.
  Returns:
    (new state, scalar metrics: loss, grad_norm, lr and the method's aux).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  views = dict(views_fn(rng, batch["image"]))
  # Own streams: the views' draws stay as they are.
  prep_rng = jax.random.fold_in(rng, _PREPARE_STREAM)
  views, batch = method.prepare(prep_rng, views, batch)
  ctx = Context(
    extras=state.extras["method"],
    mined=state.extras.get("miner"),
    step=state.step,
    rng=jax.random.fold_in(rng, _METHOD_STREAM),
  )

  def loss_of(params):
    net = Network(
      network,
      params,
      state.batch_stats,
      train=True,
      teacher_params=state.ema_params,
    )
    loss, aux, extras = method.loss(net, views, batch, ctx)
    return loss, (aux, net.batch_stats, extras)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)
  (loss, (aux, stats, extras)), grads = grad_fn(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema, decay = state.ema_params, method.ema_decay()
  if decay is not None:
    ema = ema_update(ema, params, decay(state.step))
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
  if schedule is not None:
    metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=stats,
    opt_state=opt_state,
    ema_params=ema,
    extras={**state.extras, "method": jax.lax.stop_gradient(extras)},
  )
  return new_state, metrics

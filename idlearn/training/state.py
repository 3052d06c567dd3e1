"""The train state: everything that changes during training, as one pytree."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Parameters, BatchNorm statistics, optimizer state and RNG of one run.

  No optimizer object lives here (it is a static dependency of the step), so
  the whole state is a plain pytree that Orbax saves and restores as it is.

  Attributes:
    step: int32 [] number of optimizer updates done.
    params: trainable parameters of the method's network, by part name
      ("encoder", "bnneck", "projector", ...).
    batch_stats: BatchNorm running statistics ({} for networks without).
    opt_state: the optax state of `params`.
    rng: the run's base PRNG key; step s uses `fold_in(rng, s)`.
    ema_params: exponential moving average of `params` (the method's
      teacher), or None.
    extras: {"method": the method's own state (written by its loss only),
      "miner": the miner's state (written by its refresh only)}; both
      checkpointed with the rest.
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array
  ema_params: PyTree = None
  extras: PyTree = None


def create(
  variables: dict[str, PyTree],
  tx: Any,
  rng: jax.Array,
  *,
  ema: bool = False,
  extras: PyTree = None,
) -> TrainState:
  """A step-0 state from freshly initialised flax `variables`.

  Args:
    variables: {"params": ..., "batch_stats"?: ...} from `model.init`.
    tx: the optax transformation that will update `params`.
    rng: base key of the run (raw uint32 [2] key data).
    ema: keep an EMA copy of the parameters.
    extras: {"method": ..., "miner"?: ...} (default {"method": {}}).
  Returns:
    The state at step 0.
  """
  params = variables["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(params),
    rng=rng,
    ema_params=jax.tree.map(jnp.copy, params) if ema else None,
    extras={"method": {}} if extras is None else extras,
  )

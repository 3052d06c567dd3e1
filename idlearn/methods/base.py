"""The method protocol: what a method module gives the one train loop.

A method is the unit a user reads and a contributor adds: one module under
`idlearn/methods/` holding its objective, its network (the encoder plus the
method's own trainable parts), the views it needs by role, its EMA teacher,
its miner if any, and the check of its config. The loop, the step and the
inputs know only this protocol.

In one train step (`idlearn.training.step`), for a method `m`:

  views        = {role: (view, ...)}   augmented on device (config.views)
  views, batch = m.prepare(rng, views, batch)
  loss, aux, extras = m.loss(net, views, batch, ctx)   (differentiated)

where `net` applies `m.network()` with the parameters being differentiated
(`net(x)`) or with the EMA teacher's (`net.teacher(x)`), and `ctx` holds
the method's own state (`ctx.extras`, written only by `m.loss`), the
miner's state (`ctx.mined`, read-only here: only the miner writes it), the
step and a PRNG key. Between steps the miner (if any) re-mines on the host
every `every_steps` and re-makes the batches.
"""

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from idlearn.errors import ConfigError

PyTree = Any
Aux = dict[str, jax.Array]
Views = dict[str, tuple[jax.Array, ...]]
Batch = dict[str, jax.Array]
# What the step hands `Method.loss` back: (scalar loss, scalar diagnostics,
# the method's new extras).
LossOut = tuple[jax.Array, Aux, PyTree]


def field_error(method: str, message: str) -> ConfigError:
  """A config error of `config.method` (name given), one line."""
  return ConfigError(f"config.method (name={method!r}): {message}")


@dataclasses.dataclass(frozen=True)
class Setup:
  """What the loop hands a method and its miner to build with.

  Attributes:
    mesh: the 1-D data mesh; losses that gather run under `shard_map` on it.
    make_encoder: () -> a fresh encoder module (config.model), called once
      per encoder the method's network holds.
    dtype: compute dtype of the heads (parameters stay float32).
    input: the resolved `config.input` group.
    views: {role: number of views} that config.views gives.
    seed: the run's seed.
    total_steps: length of the run.
    num_classes: () -> identities of the training split (reads the data;
      call it only when a classifier needs it).
    num_domains: () -> domains of the training split
      (config.input.domain_pattern; reads the data likewise).
  """

  mesh: Mesh
  make_encoder: Callable[[], nn.Module]
  dtype: Any
  input: Mapping[str, Any]
  views: Mapping[str, int]
  seed: int
  total_steps: int
  num_classes: Callable[[], int]
  num_domains: Callable[[], int] = dataclasses.field(
    default=lambda: _no_domains()
  )


def _no_domains() -> int:
  raise ConfigError(
    "the method needs domain labels: set config.input.domain_pattern (a "
    "regex on the image paths whose group 1 names the domain)"
  )


class Context(NamedTuple):
  """What `Method.loss` reads besides the network, views and batch.

  Attributes:
    extras: the method's own state (from `Method.init_extras`; the method's
      `loss` returns its new value, nothing else writes it).
    mined: the miner's state (pseudo labels, pairs, ...), or None.
    step: int32 [] optimizer updates done before this one.
    rng: a PRNG key of this step for the method's own randomness.
  """

  extras: PyTree
  mined: PyTree
  step: jax.Array
  rng: jax.Array


class Network:
  """The method's network inside one step.

  Student calls (`net(x)`) use the parameters being differentiated and, in
  training mode, thread BatchNorm statistics from call to call, so that
  each view is normalised over its own global batch (as SimCLR / BYOL do)
  and the statistics after the last call are the new state. Teacher calls
  use the EMA parameters with the batch's own statistics (as DINO / BYOL
  teachers in train mode do), drop the statistic updates and stop the
  gradient.

  Args:
    module: the method's flax network.
    params: its parameters.
    batch_stats: its BatchNorm statistics ({} for none).
    train: training mode.
    teacher_params: the EMA parameters, or None.
  """

  def __init__(
    self,
    module: nn.Module,
    params: PyTree,
    batch_stats: PyTree,
    *,
    train: bool,
    teacher_params: PyTree = None,
  ):
    self.module, self.params, self.train = module, params, train
    self.batch_stats, self._teacher = batch_stats, teacher_params

  def _variables(self, params):
    if self.batch_stats:
      return {"params": params, "batch_stats": self.batch_stats}
    return {"params": params}

  def __call__(self, x: jax.Array, *, method: Any = None, **kw) -> Any:
    """module(x, train=...) (or `module.method(x, ...)`) as the student."""
    variables = self._variables(self.params)
    if self.train and self.batch_stats:
      out, upd = self.module.apply(
        variables,
        x,
        train=True,
        method=method,
        mutable=["batch_stats"],
        **kw,
      )
      # Running statistics carry no gradient (buffers, as in PyTorch);
      # a next call must not close over tracers of this one's
      # differentiation (rematerialised blocks would leak them).
      self.batch_stats = jax.lax.stop_gradient(upd["batch_stats"])
      return out
    return self.module.apply(
      variables, x, train=self.train, method=method, **kw
    )

  @property
  def teacher_params(self) -> PyTree:
    """The EMA parameters (None without a teacher); read-only, like
    `params`: a method that keeps state derived from them (e.g. a head
    re-set at each re-clustering) reads them here."""
    return self._teacher

  def views(self, xs: Sequence[jax.Array], **kw) -> list[Any]:
    """The student on each of `xs` in turn."""
    return [self(x, **kw) for x in xs]

  def teacher(self, x: jax.Array, *, method: Any = None, **kw) -> Any:
    """module(x) with the EMA parameters, batch statistics of its own."""
    if self._teacher is None:
      raise ConfigError(
        "the method reads its EMA teacher but the state has none: set "
        "config.method.ema_decay > 0"
      )
    variables = self._variables(self._teacher)
    if self.batch_stats:
      out, _ = self.module.apply(
        variables, x, train=True, method=method, mutable=["batch_stats"], **kw
      )
    else:
      out = self.module.apply(variables, x, train=True, method=method, **kw)
    return jax.lax.stop_gradient(out)


class Miner(abc.ABC):
  """Host-side work between steps from the current model.

  Every `every_steps` (from step 0) the loop calls `refresh` with a feature
  function of the current encoder; the miner's new state goes into
  `TrainState.extras["miner"]` (its only writer) and the following batches
  come from `loader(state, step)`. Its state is checkpointed with the
  model, so a resumed run re-makes the same batches.

  Subclasses set NAME and FIELDS (config.miner fields with defaults,
  besides "name", "every_steps" among them) and take (cfg, setup) in their
  constructor, calling this one first.
  """

  NAME: ClassVar[str] = ""
  FIELDS: ClassVar[dict[str, Any]] = {}

  def __init__(self, cfg: dict[str, Any], setup: Setup):
    self.cfg, self.setup = cfg, setup
    self.every_steps = cfg["every_steps"]
    if self.every_steps <= 0:
      raise ConfigError(
        f"config.miner.every_steps = {self.every_steps}: expected >= 1"
      )

  @abc.abstractmethod
  def sample(self) -> np.ndarray:
    """One input image (uint8 [1, ...]) of the training batches' shape."""

  @abc.abstractmethod
  def init_state(self, feature_dims: Mapping[str, int]) -> PyTree:
    """The state before the first mining (NumPy arrays of fixed shapes);
    `feature_dims`: the widths of the features ("emb", "eval")."""

  @abc.abstractmethod
  def refresh(
    self, features: Callable[..., dict[str, np.ndarray]], state: PyTree
  ) -> tuple[PyTree, dict[str, float], str]:
    """Re-mines with the current model.

    Args:
      features: (uint8 images [n, h, w, 3], batch_size=64, use_ema=False,
        path=None) -> {"emb", "eval"} float32 [n, d] of the current
        encoder (`encoders.Backbone` of the method at `path` of the
        network's parameters, default `Method.BACKBONE`; of its EMA
        teacher with `use_ema`; compiled once per image shape, reused).
      state: the current miner state (NumPy).
    Returns:
      (new state (NumPy), scalars to log under their names, a one-line
      report for the log).
    """

  @abc.abstractmethod
  def loader(self, state: PyTree, step: int) -> Any:
    """The train loader of the batches that follow the mining at `step`."""


class Method(abc.ABC):
  """A training method (see the module docstring for the step's calls).

  Subclasses set:
    NAMES: the `config.method.name` values it answers to.
    FIELDS: config.method fields with their defaults (besides "name").
    VIEWS: {role: views needed} config.views must give.
    MINERS: names of the miners it works with (empty: none).
    NEEDS_MINER: whether it cannot train without one.
  and implement `network` and `loss`. The constructor checks the config
  (raise `field_error` with the field, the value and what is allowed).

  Attributes set by the constructor: name, cfg (resolved fields), setup,
  miner.
  """

  NAMES: ClassVar[tuple[str, ...]] = ()
  FIELDS: ClassVar[dict[str, Any]] = {}
  VIEWS: ClassVar[dict[str, int]] = {"image": 1}
  MINERS: ClassVar[tuple[str, ...]] = ()
  NEEDS_MINER: ClassVar[bool] = False
  # Where the retrieval encoder (`encoders.Backbone`: encoder + neck) sits
  # in the network's parameters (() : at the top).
  BACKBONE: ClassVar[tuple[str, ...]] = ()

  def __init__(
    self,
    name: str,
    cfg: dict[str, Any],
    setup: Setup,
    miner: Miner | None = None,
  ):
    self.name, self.cfg, self.setup, self.miner = name, cfg, setup, miner
    self._check_views(setup.views)
    self._check_miner(miner)

  def _check_views(self, given: Mapping[str, int]) -> None:
    missing = {r: n for r, n in self.VIEWS.items() if given.get(r, 0) < n}
    if missing:
      raise field_error(
        self.name,
        f"needs views {self.VIEWS} (role: count) but config.views gives "
        f"{dict(given)}",
      )

  def _check_miner(self, miner: Miner | None) -> None:
    if miner is None and self.NEEDS_MINER:
      raise field_error(
        self.name, f"needs config.miner, one of {list(self.MINERS)}"
      )
    if miner is not None and miner.NAME not in self.MINERS:
      allowed = list(self.MINERS) or "none"
      raise field_error(
        self.name,
        f"does not work with config.miner.name={miner.NAME!r} "
        f"(allowed: {allowed})",
      )

  @property
  def neck(self) -> str:
    """The retrieval feature's neck ("none", "bnneck" or "embedding")."""
    return "none"

  @property
  def neck_dim(self) -> int:
    return 0

  @abc.abstractmethod
  def network(self) -> nn.Module:
    """The trained network: `(images, train=) -> dict of outputs`, with at
    least "emb" and "eval" (see `encoders.backbone`)."""

  def encoder_inits(self, init: str) -> dict[tuple[str, ...], str]:
    """Where the network's encoders start from: {path of an encoder's
    `Backbone` in the parameters: weights ("" : fresh)}, given
    `config.model.init`. Default: the retrieval encoder from `init`. A
    method with several encoders (two students) names each."""
    return {tuple(self.BACKBONE): init}

  def sharded_params(self) -> tuple[str, ...]:
    """Names of parameters whose rows are split over the data axis (each
    device holds 1/n of them: a classifier over millions of identities).
    Their optimizer state and EMA copies are split the same way; the loss
    must read them inside `shard_map` with that split."""
    return ()

  def init_extras(self, out_shapes: Mapping[str, Any]) -> PyTree:
    """The method's initial state from the output shapes of one view."""
    del out_shapes
    return {}

  def ema_decay(self) -> Callable[[jax.Array], jax.Array] | None:
    """step -> decay of the EMA teacher, or None (no teacher)."""
    return None

  def prepare(self, rng: jax.Array, views: Views, batch: Batch):
    """(views, batch) before the network: e.g. add a mixed view."""
    del rng
    return views, batch

  @abc.abstractmethod
  def loss(
    self, net: Network, views: Views, batch: Batch, ctx: Context
  ) -> LossOut:
    """(loss, aux, new extras) on one global batch."""


def ema_schedule(
  base: float, end: float, total_steps: int
) -> Callable[[jax.Array], jax.Array] | None:
  """step -> EMA decay: constant `base`, or BYOL's cosine ramp to `end`.

  None when `base` <= 0 (no EMA).
  """
  if base <= 0:
    return None
  if end <= 0:
    return lambda step: jnp.asarray(base, jnp.float32)

  def decay(step):
    frac = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
    return end - (end - base) * (jnp.cos(jnp.pi * frac) + 1) / 2

  return decay


def first(views: Views, role: str) -> jax.Array:
  """The first view of `role`."""
  return views[role][0]


def make_loader(
  input_cfg: Mapping[str, Any],
  seed: int,
  *,
  global_batch_size: int | None = None,
  **overrides: Any,
) -> Any:
  """config.input (resolved) -> `idlearn.data` train loader of this process.

  Args:
    input_cfg: the resolved `config.input` group.
    seed: the loader's seed.
    global_batch_size: overrides the group's.
    **overrides: other `data.make_train_loader` arguments (labels=,
      pairs=, sampler=, name=, split=, ...).
  """
  from idlearn import data

  kw = {
    "name": input_cfg["name"],
    "split": input_cfg["split"],
    "image_size": tuple(input_cfg["image_size"]),
    "sampler": input_cfg["sampler"],
    "k": input_cfg["k"],
    "num_workers": input_cfg["num_workers"],
    "data_dir": input_cfg["data_dir"] or None,
    "manual_dir": input_cfg["manual_dir"] or None,
    "frame_gap": input_cfg["frame_gap"],
    "group_by": input_cfg["group_by"],
    "domain_pattern": input_cfg["domain_pattern"],
  }
  kw.update(overrides)
  return data.make_train_loader(
    global_batch_size=global_batch_size or input_cfg["global_batch_size"],
    seed=seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    **kw,
  )


def labels_of(batch: Batch) -> jax.Array:
  """The contiguous class index of each row ("label", else "id")."""
  return batch.get("label", batch["id"])

"""The run's input: config.input -> the loader, config.views -> the views
function, and the iterator the train loop draws batches from (resumable,
re-made after each mining by the method's miner)."""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from idlearn import fields, sharding
from idlearn.errors import ConfigError
from idlearn.training import step as step_lib

INPUT_FIELDS = {
  "name": fields.REQUIRED,  # an idlearn.data set name
  "split": "train",
  "image_size": (256, 128),  # (h, w) the loader resizes to
  "global_batch_size": 64,
  # random | pk | frame_pairs | camera_pairs (pairs: a miner's)
  "sampler": "random",
  "k": 4,  # images per identity (pk)
  "group_by": "id",  # pk identities: id | tracklet (video, no labels)
  "frame_gap": 1,  # frame_pairs: distance of the two frames
  # a regex on the record paths, group 1 = the record's domain: batches
  # then hold "domain" (data.domain_labels); "" : none
  "domain_pattern": "",
  "num_workers": 0,
  "data_dir": "",
  "manual_dir": "",
}


def view_specs(config: Mapping[str, Any] | None) -> list[tuple[str, dict, int]]:
  """config.views ({role: spec}) -> [(role, augment spec, frame)], one entry
  per view, roles in name order, each repeated `count` times.

  A spec holds `idlearn.augment.make_views` keys plus "count" (views of
  this role, default 1), "frame" (which image of a pair batch the role
  is made from, default 0) and "params" (see `make_views_fn`).
  """
  out = []
  for role, spec in sorted(dict(config or {}).items()):
    spec = dict(spec)
    count, frame = spec.pop("count", 1), spec.pop("frame", 0)
    spec.pop("params", None)
    if not isinstance(count, int) or count < 1:
      raise ConfigError(f"config.views.{role}.count = {count!r}: expected >= 1")
    out += [(role, spec, frame)] * count
  if not out:
    raise ConfigError("config.views is empty: give at least one view role")
  return out


def _param_roles(config: Mapping[str, Any] | None) -> set[str]:
  """The roles whose spec asks for the augmentation parameters."""
  asked = set()
  for role, spec in dict(config or {}).items():
    value = dict(spec).get("params", False)
    if not isinstance(value, bool):
      raise ConfigError(
        f"config.views.{role}.params = {value!r}: expected True or False"
      )
    if value:
      asked.add(role)
  return asked


def view_counts(config: Mapping[str, Any] | None) -> dict[str, int]:
  """{role: number of views} of config.views (and {"<role>.params": the
  same} for a role that gives its augmentation parameters)."""
  from idlearn import augment

  counts = {}
  for role, _, _ in view_specs(config):
    counts[role] = counts.get(role, 0) + 1
  for role in _param_roles(config):
    counts[augment.params_role(role)] = counts[role]
  return counts


def make_views_fn(config: Mapping[str, Any] | None) -> step_lib.ViewsFn:
  """config.views -> (rng, images) -> {role: tuple of views}.

  View i (in `view_specs` order) draws from `fold_in(rng, i)`. Pair
  batches ([b, 2, h, w, 3]: frames, camera or mined pairs) give each role
  from image `frame` of the pair. A role whose spec sets `params=True`
  also gives the augmentation parameters of its views under
  `augment.params_role(role)` ("<role>.params"): a tuple of float32
  [b, len(augment.PARAM_NAMES)], one per view (the views are the same
  with or without them).
  """
  from idlearn import augment

  specs = view_specs(config)
  asked = _param_roles(config)

  def make(rng, images, specs):
    """(views, parameters or Nones): parameters only when a role asks."""
    if not asked:
      return augment.make_views(rng, images, specs), (None,) * len(specs)
    return augment.make_views(rng, images, specs, with_params=True)

  def views_fn(rng, images):
    out = {}

    def add(role, x, p):
      out.setdefault(role, []).append(x)
      if role in asked:
        out.setdefault(augment.params_role(role), []).append(p)

    if images.ndim == 5:
      for i, (role, spec, frame) in enumerate(specs):
        if frame >= images.shape[1]:
          raise ConfigError(
            f"config.views.{role}.frame = {frame} but batches hold pairs "
            f"of {images.shape[1]} images"
          )
        xs, ps = make(jax.random.fold_in(rng, i), images[:, frame], [spec])
        add(role, xs[0], ps[0])
    else:
      xs, ps = make(rng, images, [s for _, s, _ in specs])
      for (role, _, _), x, p in zip(specs, xs, ps, strict=True):
        add(role, x, p)
    return {role: tuple(v) for role, v in out.items()}

  return views_fn


class Inputs:
  """The run's batches: the loader's iterator, resumable, and re-made by
  the miner every `every_steps` from the current model.

  Args:
    loader: the train loader (None when the miner makes them).
    miner: the method's `Miner`, or None.
    mesh: the data mesh.
    features: (state, images, batch_size=, use_ema=, path=) -> {"emb",
      "eval"} features of the state's retrieval encoder (an
      `encoder.RunEncoder`).
  """

  def __init__(self, loader: Any, miner: Any, mesh: Any, features: Callable):
    self.loader, self.miner, self.mesh = loader, miner, mesh
    self._features = features
    self.first, self.it, self.data_state = None, None, None
    if self.miner is None:
      self.it = iter(self.loader)
      self.first = next(self.it)  # the shapes to initialise with; replayed

  def sample(self) -> np.ndarray:
    """One input image (uint8 [1, ...]) of the training shape."""
    if self.first is not None:
      return self.first["image"][:1]
    return self.miner.sample()

  def resume(self, data_state: Any, step: int) -> None:
    self.first = None
    if self.miner is None:
      self.it = iter(self.loader)
      if data_state is None:
        logging.warning(
          "checkpoint %d has no input state for this process layout; the "
          "input restarts from its seed (not an exact resume)",
          step,
        )
      else:
        self.it.set_state(data_state)
    else:  # re-made from the restored mining state in `next`
      self.it, self.data_state = None, data_state

  def next(self, state: Any, step: int, report: Callable) -> tuple:
    """(state, batch, iterator state after it) for step `step` (1-based).

    `report(step, scalars, message)` logs a mining.
    """
    if self.miner is not None:
      state = self._mine(state, step - 1, report)
    if self.first is not None:
      batch, self.first = self.first, None
    else:
      batch = next(self.it)
    return state, batch, self.it.get_state()

  def _mine(self, state, done: int, report):
    every = self.miner.every_steps
    if done % every == 0:  # due: mine with the current model
      mined = sharding.to_host(state.extras["miner"])
      new, info, message = self.miner.refresh(
        lambda images, batch_size=64, **kw: self._features(
          state, images, batch_size=batch_size, **kw
        ),
        mined,
      )
      report(done, info, message)
      rep = sharding.replicated(self.mesh)
      extras = {**state.extras, "miner": jax.device_put(new, rep)}
      state = state.replace(extras=extras)
      self.it = iter(self.miner.loader(new, done))
    elif self.it is None:  # resumed mid-interval: the restored mining
      last = done - done % every
      mined = sharding.to_host(state.extras["miner"])
      self.it = iter(self.miner.loader(mined, last))
      if self.data_state is not None:
        self.it.set_state(self.data_state)
    return state

"""The run's input: config.input -> loaders, config.views -> the views
function, the host-side miners (DomainMix clusters, mined pairs), and the
iterator the train loop draws batches from (resumable, re-made after each
mining)."""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from idlearn.training import fields, pair_mining, relabel
from idlearn.training import step as step_lib

INPUT_FIELDS = {
  "name": fields.REQUIRED,  # an idlearn.data set name
  "split": "train",
  "image_size": (256, 128),  # (h, w) the loader resizes to
  "global_batch_size": 64,
  "sampler": "random",  # random | pk | frame_pairs
  "k": 4,  # images per identity (pk)
  "group_by": "id",  # pk identities: id | tracklet (video, no labels)
  "frame_gap": 1,  # frame_pairs: distance of the two frames
  "num_workers": 0,
  "data_dir": "",
  "manual_dir": "",
}


def make_loader(
  config: Mapping[str, Any],
  seed: int,
  *,
  global_batch_size: int | None = None,
  labels: np.ndarray | None = None,
  pairs: np.ndarray | None = None,
) -> Any:
  """config.input -> idlearn.data train loader reading this process's shard.

  `global_batch_size`, `labels` (pseudo identities) and `pairs` (mined
  record pairs, sampler "pairs") override the config.
  """
  from idlearn import data

  cfg = fields.resolve(config, INPUT_FIELDS, "config.input")
  return data.make_train_loader(
    name=cfg["name"],
    split=cfg["split"],
    image_size=tuple(cfg["image_size"]),
    global_batch_size=global_batch_size or cfg["global_batch_size"],
    sampler=cfg["sampler"],
    k=cfg["k"],
    seed=seed,
    num_workers=cfg["num_workers"],
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    data_dir=cfg["data_dir"] or None,
    manual_dir=cfg["manual_dir"] or None,
    frame_gap=cfg["frame_gap"],
    group_by=cfg["group_by"],
    labels=labels,
    pairs=pairs,
  )


def _relabel_loader(config, batch, seed, labels=None, pairs=None):
  return make_loader(
    config, seed, global_batch_size=batch, labels=labels, pairs=pairs
  )


def make_views_fn(config: Mapping[str, Any]) -> step_lib.ViewsFn:
  """config.views ({name: spec}, in name order) -> (rng, images) -> views.

  Pair batches ([b, 2, h, w, 3]: frames, camera or mined pairs) give view i
  from image `spec["frame"]` of the pair (default: view i from image i).
  """
  from idlearn import augment

  specs = [dict(v) for _, v in sorted(dict(config or {}).items())]
  if not specs:
    raise ValueError("config.views is empty: give at least one view spec")
  frames = [s.pop("frame", i) for i, s in enumerate(specs)]

  def views_fn(rng, images):
    if images.ndim == 5:
      if max(frames) >= images.shape[1]:
        raise ValueError(
          f"config.views read images {frames} of pairs of {images.shape[1]}"
          " (set each view's 'frame')"
        )
      return tuple(
        augment.make_views(jax.random.fold_in(rng, i), images[:, f], [s])[0]
        for i, (s, f) in enumerate(zip(specs, frames, strict=True))
      )
    return tuple(augment.make_views(rng, images, specs))

  return views_fn


def make_miner(cfg: Mapping[str, Any], inp: Mapping[str, Any], model: Any):
  """config.pseudo_labels / config.pair_mining -> the miner, or None."""
  if cfg["pseudo_labels"] and cfg["pair_mining"]:
    raise ValueError(
      "config.pseudo_labels and config.pair_mining are exclusive: set one"
    )
  if cfg["pseudo_labels"]:
    group = fields.resolve(
      cfg["pseudo_labels"], relabel.FIELDS, "config.pseudo_labels"
    )
    return relabel.Relabeler(group, model, _relabel_loader, inp, cfg["seed"])
  if cfg["pair_mining"]:
    group = fields.resolve(
      cfg["pair_mining"], pair_mining.FIELDS, "config.pair_mining"
    )
    return pair_mining.CameraPairMiner(
      group, model, _relabel_loader, inp, cfg["seed"]
    )
  return None


class Inputs:
  """The run's batches: the loader's iterator, resumable, and re-made by
  the miner (DomainMix clusters, mined pairs) every `every_steps`."""

  def __init__(self, parts: Any, mesh: Any):
    self.miner, self.mesh = parts.miner, mesh
    self.loader, self.first = parts.loader, None
    self.it, self.data_state = None, None
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

  def next(self, state: Any, step: int, writer: Any) -> tuple[Any, Any, Any]:
    """(state, batch, iterator state after it) for step `step` (1-based)."""
    if self.miner is not None:
      state = self._mine(state, step - 1, writer)
    if self.first is not None:
      batch, self.first = self.first, None
    else:
      batch = next(self.it)
    return state, batch, self.it.get_state()

  def _mine(self, state, done: int, writer):
    every = self.miner.every_steps
    if done % every == 0:  # due: mine with the current model
      state, info = self.miner.refresh(state, self.mesh)
      writer.write(done, info)
      self.it = iter(self.miner.loader(state.extras, done))
    elif self.it is None:  # resumed mid-interval: the restored mining
      last = done - done % every
      self.it = iter(self.miner.loader(state.extras, last))
      if self.data_state is not None:
        self.it.set_state(self.data_state)
    return state

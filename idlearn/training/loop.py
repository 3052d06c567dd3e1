"""The one train loop: build from config, resume, step, log, eval, save.

Every method runs through `train`; they differ only in config (model head,
views, objective, optimizer). Inputs arrive per process and become global
arrays on a 1-D data mesh; the state is replicated and donated to a jitted
step; the loss, data-iterator position and RNG are all part of the
checkpoint, so a resumed run repeats the uninterrupted one exactly.
"""

import dataclasses
import functools
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from idlearn.training import checkpoint, fields, objectives, optim, sharding
from idlearn.training import eval as eval_lib
from idlearn.training import inputs as inputs_lib
from idlearn.training import model as model_lib
from idlearn.training import state as state_lib
from idlearn.training import step as step_lib
from idlearn.training import writer as writer_lib

FIELDS = {
  "seed": 0,
  "total_steps": fields.REQUIRED,
  "log_steps": 10,
  "ckpt_steps": 100,
  "keep_ckpts": 2,
  "best_metric": "",  # e.g. "eval/pku_reid/rank1": its best is kept too
  "best_mode": "max",
  "eval_at_start": False,  # evaluate the untrained model first
  "async_ckpt": True,
  "input": None,
  "views": None,
  "model": None,
  "loss": None,
  "optim": None,
  "evals": None,
  # Host-side mining between steps (at most one): DomainMix pseudo labels
  # (idlearn.training.relabel.FIELDS) or cross-camera positive pairs
  # (idlearn.training.pair_mining.FIELDS).
  "pseudo_labels": None,
  "pair_mining": None,
}


@dataclasses.dataclass
class Parts:
  """What `train` builds from a config (tests may pass their own)."""

  model: Any
  loader: Any  # iter() -> iterator with next / get_state / set_state
  views_fn: step_lib.ViewsFn
  evaluators: list = dataclasses.field(default_factory=list)
  batch_size: int = 0
  # A host-side miner that re-makes the batches every few steps from the
  # current model (relabel.Relabeler, pair_mining.CameraPairMiner), or None.
  miner: Any = None


def build(config: Any, **given: Any) -> Parts:
  """The model, loader, views and evaluators of `config`; `given` overrides."""
  cfg = fields.resolve(config, FIELDS, "config")
  inp = fields.resolve(cfg["input"], inputs_lib.INPUT_FIELDS, "config.input")
  model = given.get("model")
  if model is None:
    model = model_lib.make_model(
      cfg["model"], num_classes=_num_classes(cfg["model"], inp)
    )
  miner = given.get("miner")
  if miner is None:
    miner = inputs_lib.make_miner(cfg, inp, model)
  loader = given.get("loader")
  if loader is None and miner is None:
    loader = inputs_lib.make_loader(inp, cfg["seed"])
  views_fn = given.get("views_fn") or inputs_lib.make_views_fn(cfg["views"])
  evaluators = given.get("evaluators")
  if evaluators is None:
    evaluators = eval_lib.make_evaluators(cfg["evals"], model)
  return Parts(
    model,
    loader,
    views_fn,
    evaluators,
    inp["global_batch_size"],
    miner,
  )


def _num_classes(model_cfg, inp) -> int:
  """Identities of the training split, for a classifier head (else 0)."""
  head = (model_cfg or {}).get("head", "none")
  if head not in ("bnneck", "margin") or (model_cfg or {}).get(
    "num_classes", 0
  ):
    return 0
  from idlearn import data

  builder = data.prepare(
    inp["name"],
    data_dir=inp["data_dir"] or None,
    manual_dir=inp["manual_dir"] or None,
  )
  labels = data.split_meta(builder, inp["split"])["label"]
  return int(labels.max()) + 1


def _init_state(cfg, parts, tx, mesh, sample, objective=None):
  """Initialises the state on device, replicated, in one compiled call."""
  ema = optim.ema_decay_fn(cfg["optim"], cfg["total_steps"]) is not None
  rng = jax.random.PRNGKey(cfg["seed"])
  # Shapes only: running the augmentations eagerly would compile every op.
  view = jax.eval_shape(parts.views_fn, rng, sample)[0]
  init_extras = getattr(objective, "init_extras", None)

  def init(rng):
    init_rng, run_rng = jax.random.split(rng)
    x = jax.numpy.zeros(view.shape, view.dtype)
    outs, variables = parts.model.init_with_output(init_rng, x, train=False)
    extras, shapes = {}, jax.tree.map(jax.typeof, outs)
    if init_extras is not None:
      extras.update(init_extras(shapes))
    if parts.miner is not None:
      extras.update(parts.miner.init_extras(shapes))
    return state_lib.create(variables, tx, run_rng, ema=ema, extras=extras)

  return jax.jit(init, out_shardings=sharding.replicated(mesh))(rng)


def _abstract(tree, mesh):
  rep = sharding.replicated(mesh)
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), tree
  )


def _check_finite(step: int, metrics: Mapping[str, float], ckpt) -> None:
  if not math.isfinite(metrics["loss"]):
    raise FloatingPointError(
      f"non-finite loss {metrics['loss']} at step {step}; stopping. The "
      f"last good checkpoint (step {ckpt.latest_step()}) in "
      f"{ckpt.directory} is kept."
    )


def _evaluate(evaluators, state, step, writer, picture_dir=None):
  """Runs the evaluators; with `picture_dir` they also draw their results
  there (in a sub-folder per evaluator when there are several)."""
  out = {}
  for ev in evaluators:
    where = picture_dir
    if picture_dir is not None and len(evaluators) > 1:
      where = os.path.join(picture_dir, ev.name)
    out.update(ev.run(state, picture_dir=where))
  if out:
    writer.write(step, out)
    items = " ".join(f"{k}={v:.4f}" for k, v in out.items())
    writer_lib.say(f"eval at step {step}: {items}")
  return out


def _due(step: int, every: int, total: int) -> bool:
  return step == total or (every > 0 and step % every == 0)


def train(
  config: Any, workdir: str, *, mesh: Any = None, **given: Any
) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Args:
    config: the experiment ConfigDict (fields in `FIELDS` and the groups'
      own FIELDS).
    workdir: checkpoints, metrics.jsonl, tensorboard/ and config.json go here.
    mesh: the data mesh (default: all devices of all processes).
    **given: parts to use instead of building them from the config: model,
      loader, views_fn, evaluators (see `Parts`).
  Returns:
    The last train metrics, evaluation results ("eval/...") and, with
    eval_at_start, the untrained model's ("untrained/eval/...").
  Raises:
    FloatingPointError: a non-finite loss (the last good checkpoint stays).
    ValueError: bad config fields, or a workdir holding an incompatible
      checkpoint (left untouched).
  """
  cfg = fields.resolve(config, FIELDS, "config")
  mesh = mesh or sharding.make_data_mesh()
  parts = build(config, **given)
  total = cfg["total_steps"]
  tx, schedule = optim.make_optimizer(cfg["optim"], total)
  objective = objectives.make_objective(cfg["loss"], mesh)
  inputs = inputs_lib.Inputs(parts, mesh)
  state = _init_state(cfg, parts, tx, mesh, inputs.sample(), objective)
  ckpt = checkpoint.Checkpointer(
    workdir,
    save_steps=cfg["ckpt_steps"],
    keep=cfg["keep_ckpts"],
    best_metric=cfg["best_metric"],
    best_mode=cfg["best_mode"],
    async_save=cfg["async_ckpt"],
  )
  start = ckpt.latest_step()
  if start is not None:
    state, data_state = ckpt.restore(start, _abstract(state, mesh))
    inputs.resume(data_state, start)
    writer_lib.say(f"resumed from {ckpt.directory} at step {start}")
  start = int(sharding.to_host(state.step))
  _save_config(config, workdir)
  step_fn = jax.jit(
    functools.partial(
      step_lib.train_step,
      model=parts.model,
      tx=tx,
      objective=objective,
      views_fn=parts.views_fn,
      schedule=schedule,
      ema_decay=optim.ema_decay_fn(cfg["optim"], total),
    ),
    out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  try:
    return _run(cfg, parts, state, inputs, start, step_fn, ckpt, mesh, workdir)
  finally:
    ckpt.close()


def _run(cfg, parts, state, inputs, start, step_fn, ckpt, mesh, workdir):
  total, out = cfg["total_steps"], {}
  writer = writer_lib.MetricWriter(workdir)
  if cfg["eval_at_start"] and start == 0 and parts.evaluators:
    res = _evaluate(parts.evaluators, state, 0, writer)
    out.update({f"untrained/{k}": v for k, v in res.items()})
  if start >= total:  # finished earlier: report the final model again
    writer_lib.say(f"already trained to step {start} (total_steps {total})")
    out.update(_evaluate(parts.evaluators, state, start, writer))
  progress = writer_lib.Progress(start, total, parts.batch_size)
  ckpt.watch_sigterm()
  pending = None  # (step, device metrics) checked one step late: async
  for step in range(start + 1, total + 1):
    state, batch, data_state = inputs.next(state, step, writer)
    batch = sharding.put_local_batch(batch, mesh)
    with jax.transfer_guard("disallow"):
      state, metrics = step_fn(state, batch)
    if pending is not None:
      _check_finite(pending[0], sharding.to_host(pending[1]), ckpt)
    pending = (step, metrics)
    evals = [e for e in parts.evaluators if _due(step, e.log_steps, total)]
    preempted = ckpt.preempted(step)
    save = (
      ckpt.manager.should_save(step)
      or step == total
      or preempted
      or (evals and cfg["best_metric"])
    )
    if save or _due(step, cfg["log_steps"], total):
      m = sharding.to_host(metrics)
      _check_finite(step, m, ckpt)
      pending = None
      writer.write(step, {f"train/{k}": v for k, v in m.items()})
      progress.update(step, m)
      out.update({f"train/{k}": float(v) for k, v in m.items()})
    res = _evaluate(evals, state, step, writer) if evals else {}
    out.update(res)
    if save:
      ckpt.save(step, state, data_state, metrics=res, force=True)
    if preempted:
      logging.warning("preempted: saved step %d, exiting", step)
      out["preempted_at"] = step
      break
  progress.close()
  writer.close()
  return out


def _save_config(config, workdir):
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2, default=str)


def evaluate(config: Any, workdir: str, **given: Any) -> dict[str, float]:
  """Runs the config's evaluators on the latest checkpoint of `workdir`.

  Raises:
    ValueError: no checkpoint in `workdir`, or an incompatible one.
  """
  cfg = fields.resolve(config, FIELDS, "config")
  inp = fields.resolve(cfg["input"], inputs_lib.INPUT_FIELDS, "config.input")
  mesh = given.pop("mesh", None) or sharding.make_data_mesh()
  given.setdefault("loader", [])  # no training input needed
  parts = build(config, **given)
  tx, _ = optim.make_optimizer(cfg["optim"], cfg["total_steps"])
  objective = objectives.make_objective(cfg["loss"], mesh)
  sample = np.zeros((1, *inp["image_size"], 3), np.uint8)
  state = _init_state(cfg, parts, tx, mesh, sample, objective)
  ckpt = checkpoint.Checkpointer(workdir, save_steps=cfg["ckpt_steps"])
  try:
    step = ckpt.latest_step()
    if step is None:
      raise ValueError(f"no checkpoint in {ckpt.directory} to evaluate")
    state, _ = ckpt.restore(step, _abstract(state, mesh))
  finally:
    ckpt.close()
  writer = writer_lib.MetricWriter(workdir)
  try:
    return _evaluate(parts.evaluators, state, step, writer, picture_dir=workdir)
  finally:
    writer.close()

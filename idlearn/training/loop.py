"""The one train loop: build from config, resume, step, log, eval, save.

Every method runs through `train`; the loop knows the method protocol
(`idlearn.methods`), never a method. Inputs arrive per process and become
global arrays on a 1-D data mesh; the state is replicated and donated to a
jitted step; the data-iterator position, the RNG and the method's and
miner's state are all part of the checkpoint, so a resumed run repeats the
uninterrupted one exactly.
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

from idlearn import fields, methods, pretrained, sharding
from idlearn.training import checkpoint, optim
from idlearn.training import encoder as encoder_lib
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
  "method": None,
  "miner": None,  # host-side mining between steps (the method's miner)
  "optim": None,
  "evals": None,
}


@dataclasses.dataclass
class Run:
  """What `train` / `evaluate` build from a config, once.

  Attributes:
    cfg: the resolved top-level fields.
    mesh: the data mesh.
    method: the `idlearn.methods.Method`.
    network: `method.network()`.
    views_fn: (rng, images) -> {role: views}.
    encoder: the run's retrieval encoder: features of a state (evaluators,
      miner) and the encoder folders it leaves.
    evaluators: objects with `.name`, `.log_steps` and `.run(state)`.
    tx, schedule: the optimizer and its learning-rate schedule.
    step_fn: the jitted train step (state donated).
    loader: the train loader (None when the miner makes the batches).
    input: the resolved config.input.
  """

  cfg: dict[str, Any]
  mesh: Any
  method: methods.Method
  network: Any
  views_fn: step_lib.ViewsFn
  encoder: encoder_lib.RunEncoder
  evaluators: list
  tx: Any
  schedule: Any
  step_fn: Any
  loader: Any
  input: dict[str, Any]


def build(config: Any, mesh: Any = None, **given: Any) -> Run:
  """Builds every part of a run from `config`; `given` parts replace built
  ones (tests): encoder (a module), loader, views_fn, evaluators."""
  cfg = fields.resolve(config, FIELDS, "config")
  mesh = mesh or sharding.make_data_mesh()
  inp = fields.resolve(cfg["input"], inputs_lib.INPUT_FIELDS, "config.input")
  make_encoder, dtype = model_lib.encoder_factory(
    cfg["model"], encoder=given.get("encoder")
  )
  setup = methods.Setup(
    mesh=mesh,
    make_encoder=make_encoder,
    dtype=dtype,
    input=inp,
    views=inputs_lib.view_counts(cfg["views"]),
    seed=cfg["seed"],
    total_steps=cfg["total_steps"],
    num_classes=functools.partial(_num_classes, inp),
  )
  miner = methods.make_miner(cfg["miner"], setup)
  method = methods.make_method(cfg["method"], setup, miner)
  encoder = encoder_lib.RunEncoder(
    method,
    mesh,
    None if "encoder" in given else model_lib.resolve(cfg["model"]),
    eval_lib.preprocessing(cfg["evals"], inp["image_size"]),
  )
  evaluators = given.get("evaluators")
  if evaluators is None:
    evaluators = eval_lib.make_evaluators(cfg["evals"], encoder)
  loader = given.get("loader")
  if loader is None and miner is None:
    loader = methods.make_loader(inp, cfg["seed"])
  tx, schedule = optim.make_optimizer(cfg["optim"], cfg["total_steps"])
  network = method.network()
  views_fn = given.get("views_fn") or inputs_lib.make_views_fn(cfg["views"])
  rep = sharding.replicated(mesh)
  step_fn = jax.jit(
    functools.partial(
      step_lib.train_step,
      method=method,
      network=network,
      tx=tx,
      views_fn=views_fn,
      schedule=schedule,
    ),
    out_shardings=(rep, rep),
    donate_argnums=(0,),
  )
  return Run(
    cfg=cfg,
    mesh=mesh,
    method=method,
    network=network,
    views_fn=views_fn,
    encoder=encoder,
    evaluators=evaluators,
    tx=tx,
    schedule=schedule,
    step_fn=step_fn,
    loader=loader,
    input=inp,
  )


def _num_classes(inp: Mapping[str, Any]) -> int:
  """Identities of the training split (a classifier's width)."""
  from idlearn import data

  builder = data.prepare(
    inp["name"],
    data_dir=inp["data_dir"] or None,
    manual_dir=inp["manual_dir"] or None,
  )
  labels = data.split_meta(builder, inp["split"])["label"]
  return int(labels.max()) + 1


def init_state(run: Run, sample: np.ndarray) -> state_lib.TrainState:
  """The step-0 state on device, replicated, in one compiled call.

  Args:
    run: the built run.
    sample: one input image (uint8 [1, ...]) of the training shape.
  """
  rng = jax.random.PRNGKey(run.cfg["seed"])
  # Shapes only: running the augmentations eagerly would compile every op.
  views = jax.eval_shape(run.views_fn, rng, sample)
  view = views[sorted(views)[0]][0]
  x = jax.ShapeDtypeStruct(view.shape, view.dtype)
  out_shapes = jax.eval_shape(
    lambda r, x: run.network.init_with_output(r, x, train=False)[0], rng, x
  )
  method, tx = run.method, run.tx

  def init(rng):
    init_rng, run_rng = jax.random.split(rng)
    x0 = jax.numpy.zeros(view.shape, view.dtype)
    variables = run.network.init(init_rng, x0, train=False)
    return state_lib.create(
      variables,
      tx,
      run_rng,
      ema=method.ema_decay() is not None,
      extras={"method": method.init_extras(out_shapes)},
    )

  rep = sharding.replicated(run.mesh)
  state = jax.jit(init, out_shardings=rep)(rng)
  if method.miner is not None:
    dims = {k: out_shapes[k].shape[-1] for k in ("emb", "eval")}
    mined = jax.device_put(method.miner.init_state(dims), rep)
    state = state.replace(extras={**state.extras, "miner": mined})
  return state


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
      own fields).
    workdir: checkpoints, metrics.jsonl, tensorboard/ and config.json go here.
    mesh: the data mesh (default: all devices of all processes).
    **given: parts to use instead of building them (see `build`).
  Returns:
    The last train metrics, evaluation results ("eval/...") and, with
    eval_at_start, the untrained model's ("untrained/eval/...").
  Raises:
    FloatingPointError: a non-finite loss (the last good checkpoint stays).
    ValueError: bad config fields, or a workdir holding an incompatible
      checkpoint (left untouched).
  """
  run = build(config, mesh, **given)
  cfg = run.cfg
  inputs = inputs_lib.Inputs(
    run.loader, run.method.miner, run.mesh, run.encoder
  )
  state = init_state(run, inputs.sample())
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
    state, data_state = ckpt.restore(start, _abstract(state, run.mesh))
    inputs.resume(data_state, start)
    writer_lib.say(f"resumed from {ckpt.directory} at step {start}")
  _save_config(config, workdir)
  try:
    return _run(run, state, inputs, ckpt, workdir)
  finally:
    ckpt.close()


def _run(run, state, inputs, ckpt, workdir):
  """Steps from the state's step to total_steps; returns the results."""
  cfg, total, out = run.cfg, run.cfg["total_steps"], {}
  evaluators, start = run.evaluators, int(sharding.to_host(state.step))
  writer = writer_lib.MetricWriter(workdir)
  leaving = _Leaving(run, workdir)

  def report(step, scalars, message):
    writer.write(step, scalars)
    writer_lib.say(message)

  if cfg["eval_at_start"] and start == 0 and evaluators:
    res = _evaluate(evaluators, state, 0, writer)
    out.update({f"untrained/{k}": v for k, v in res.items()})
  if start >= total:  # finished earlier: report the final model again
    writer_lib.say(f"already trained to step {start} (total_steps {total})")
    out.update(_evaluate(evaluators, state, start, writer))
  progress = writer_lib.Progress(start, total, run.input["global_batch_size"])
  ckpt.watch_sigterm()
  pending = None  # (step, device metrics) checked one step late: async
  for step in range(start + 1, total + 1):
    state, batch, data_state = inputs.next(state, step, report)
    batch = sharding.put_local_batch(batch, run.mesh)
    with jax.transfer_guard("disallow"):
      state, metrics = run.step_fn(state, batch)
    if pending is not None:
      _check_finite(pending[0], sharding.to_host(pending[1]), ckpt)
    pending = (step, metrics)
    evals = [e for e in evaluators if _due(step, e.log_steps, total)]
    preempted = ckpt.preempted(step)
    save = (
      ckpt.should_save(step)
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
    leaving.best(state, step, res)
    if preempted:
      logging.warning("preempted: saved step %d, exiting", step)
      out["preempted_at"] = step
      break
  else:
    leaving.final(state, total, out)
  progress.close()
  writer.close()
  return out


class _Leaving:
  """Writes the run's encoder folders: WORKDIR/encoder/final at the end,
  WORKDIR/encoder/best whenever config.best_metric improves (and
  WORKDIR/encoder/spec.json, to read any training checkpoint)."""

  def __init__(self, run: Run, workdir: str):
    self.run, self.folder = run, os.path.join(workdir, "encoder")
    self.metric = run.cfg["best_metric"]
    self.sign = -1.0 if run.cfg["best_mode"] == "min" else 1.0
    if jax.process_index() == 0:
      run.encoder.write_spec(workdir)
    self.best_value = None
    best = os.path.join(self.folder, "best")
    if self.metric and pretrained.is_encoder_folder(best):
      self.best_value = pretrained.read_spec(best)["info"].get(self.metric)

  def _info(self, step: int, results: Mapping[str, float]) -> dict:
    info = {"step": step}
    for ev in self.run.evaluators:
      info = {**getattr(ev, "info", dict)(), **info}
    info.update({k: v for k, v in results.items() if k.startswith("eval/")})
    return info

  def best(self, state, step: int, results: Mapping[str, float]) -> None:
    value = results.get(self.metric) if self.metric else None
    if value is None:
      return
    if self.best_value is not None and self.sign * value <= self.sign * (
      self.best_value
    ):
      return
    self.best_value = value
    self.run.encoder.save(
      os.path.join(self.folder, "best"), state, info=self._info(step, results)
    )

  def final(self, state, step: int, results: Mapping[str, float]) -> None:
    self.run.encoder.save(
      os.path.join(self.folder, "final"), state, info=self._info(step, results)
    )


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
  mesh = given.pop("mesh", None)
  given.setdefault("loader", [])  # no training input needed
  run = build(config, mesh, **given)
  sample = (
    run.method.miner.sample()
    if run.method.miner is not None
    else np.zeros((1, *run.input["image_size"], 3), np.uint8)
  )
  state = init_state(run, sample)
  ckpt = checkpoint.Checkpointer(workdir, save_steps=run.cfg["ckpt_steps"])
  try:
    step = ckpt.latest_step()
    if step is None:
      raise ValueError(f"no checkpoint in {ckpt.directory} to evaluate")
    state, _ = ckpt.restore(step, _abstract(state, run.mesh))
  finally:
    ckpt.close()
  writer = writer_lib.MetricWriter(workdir)
  try:
    return _evaluate(run.evaluators, state, step, writer, picture_dir=workdir)
  finally:
    writer.close()

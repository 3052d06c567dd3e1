"""The one train loop: build from config, resume, step, log, eval, save.

Every method runs through `train`; the loop knows the method protocol
(`idlearn.methods`), never a method. Inputs arrive per process and become
global arrays on a 1-D data mesh; the state is replicated (but the rows
of a method's `sharded_params`, split over the mesh) and donated to a
jitted step; the data-iterator position, the RNG and the method's and
miner's state are all part of the checkpoint, so a resumed run repeats the
uninterrupted one exactly.
"""

import contextlib
import dataclasses
import errno
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
from idlearn.errors import CheckpointError, ConfigError, DiskFull, NonFiniteLoss
from idlearn.training import checkpoint, optim
from idlearn.training import encoder as encoder_lib
from idlearn.training import eval as eval_lib
from idlearn.training import inputs as inputs_lib
from idlearn.training import model as model_lib
from idlearn.training import state as state_lib
from idlearn.training import step as step_lib
from idlearn.training import workdir as workdir_lib
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
  # a training-set search run once before training (idlearn.mining.selection)
  "select": None,
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
    # without a domain_pattern the default says how to set one
    **(
      {"num_domains": functools.partial(_num_domains, inp)}
      if inp["domain_pattern"]
      else {}
    ),
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
  step_fn = _Step(
    functools.partial(
      step_lib.train_step,
      method=method,
      network=network,
      tx=tx,
      views_fn=views_fn,
      schedule=schedule,
    ),
    mesh,
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


class _Step:
  """The jitted train step (state donated). The new state keeps the
  shardings the state came in with: replicated, or rows split for a
  method's `sharded_params` (see `init_state`)."""

  def __init__(self, fn, mesh):
    self._fn, self._mesh, self._jit = fn, mesh, None

  def __call__(self, state, batch):
    if self._jit is None:
      self._jit = jax.jit(
        self._fn,
        out_shardings=(
          jax.tree.map(lambda x: x.sharding, state),
          sharding.replicated(self._mesh),
        ),
        donate_argnums=(0,),
      )
    return self._jit(state, batch)


def _split_meta(inp: Mapping[str, Any]) -> dict[str, np.ndarray]:
  from idlearn import data

  builder = data.prepare(
    inp["name"],
    data_dir=inp["data_dir"] or None,
    manual_dir=inp["manual_dir"] or None,
  )
  return data.split_meta(builder, inp["split"])


def _num_classes(inp: Mapping[str, Any]) -> int:
  """Identities of the training split (a classifier's width)."""
  return int(_split_meta(inp)["label"].max()) + 1


def _num_domains(inp: Mapping[str, Any]) -> int:
  """Domains of the training split (config.input.domain_pattern)."""
  from idlearn import data

  paths = _split_meta(inp)["path"]
  return len(data.domain_labels(paths, inp["domain_pattern"])[1])


def init_state(run: Run, sample: np.ndarray) -> state_lib.TrainState:
  """The step-0 state on device in one compiled call: replicated, but the
  rows of the method's `sharded_params` split over the data axis.

  The encoder starts from config.model.init when it names weights (the
  method's heads start fresh either way); a method with several encoders
  says which start from what (`Method.encoder_inits`).

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
  paths, weights = [], []  # host copies: placed by the jit below
  if run.encoder.model_config is not None:
    paths, weights = _pretrained(run.encoder.model_config, method)

  def init(rng, weights):
    init_rng, run_rng = jax.random.split(rng)
    x0 = jax.numpy.zeros(view.shape, view.dtype)
    variables = run.network.init(init_rng, x0, train=False)
    for path, w in zip(paths, weights, strict=True):
      variables = _with_encoder(variables, w, path)
    return state_lib.create(
      variables,
      tx,
      run_rng,
      ema=method.ema_decay() is not None,
      extras={"method": method.init_extras(out_shapes)},
    )

  rep = sharding.replicated(run.mesh)
  shardings = sharding.state_shardings(
    jax.eval_shape(init, rng, weights), method.sharded_params(), run.mesh
  )
  state = jax.jit(init, out_shardings=shardings)(rng, weights)
  if method.miner is not None:
    dims = {k: out_shapes[k].shape[-1] for k in ("emb", "eval")}
    mined = jax.device_put(method.miner.init_state(dims), rep)
    state = state.replace(extras={**state.extras, "miner": mined})
  return state


def _pretrained(model_config, method) -> tuple[list, list]:
  """([path], [encoder variables]) of the encoders that start from weights:
  `method.encoder_inits(config.model.init)`, each file read once."""
  cfg = model_lib.resolve(model_config)
  loaded, paths, weights = {}, [], []
  for path, source in method.encoder_inits(cfg["init"]).items():
    if not source:
      continue
    if source not in loaded:
      w = model_lib.pretrained_encoder({**cfg, "init": source})
      loaded[source] = jax.tree.map(np.asarray, w)
    paths.append(tuple(path))
    weights.append(loaded[source])
  return paths, weights


def _merged(fresh, given, where="encoder"):
  """`given` over `fresh`: the fresh leaves it lacks are kept (layers the
  config's encoder inserts, `after_stage`, start fresh)."""
  if not isinstance(fresh, Mapping):
    return given
  extra = sorted(set(given) - set(fresh))
  if extra:
    raise ConfigError(
      f"config.model.init: the weights hold {where}/{extra[0]}, which "
      "the config's encoder has not"
    )
  return {
    k: _merged(v, given[k], f"{where}/{k}") if k in given else v
    for k, v in fresh.items()
  }


def _with_encoder(variables, weights, path):
  """`variables` with the encoder at `path` replaced by `weights` (its
  leaves that `weights` lacks kept fresh)."""
  out = {}
  for collection, tree in variables.items():
    if collection not in weights:
      out[collection] = tree
      continue

    def put(node, keys, value):
      if not keys:
        return {**node, "encoder": _merged(node.get("encoder", {}), value)}
      return {**node, keys[0]: put(node[keys[0]], keys[1:], value)}

    out[collection] = put(dict(tree), tuple(path), weights[collection])
  return out


def _abstract(tree):
  """Restore targets: the shapes, dtypes and shardings of `tree`."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
    tree,
  )


def _check_run_fields(cfg: Mapping[str, Any], mesh: Any) -> None:
  """Values the loop reads, checked before anything is built or written."""
  for name, least in (
    ("total_steps", 1),
    ("ckpt_steps", 1),
    ("keep_ckpts", 1),
    ("log_steps", 0),
  ):
    if cfg[name] < least:
      raise ConfigError(f"config.{name} = {cfg[name]}: expected >= {least}")
  fields.choice(cfg["best_mode"], ("max", "min"), "config.best_mode")
  inp = fields.resolve(cfg["input"], inputs_lib.INPUT_FIELDS, "config.input")
  batch, k = inp["global_batch_size"], inp["k"]
  devices = mesh.shape[sharding.DATA_AXIS]
  if batch < 1 or k < 1:
    raise ConfigError(
      f"config.input.global_batch_size = {batch} and config.input.k = {k}: "
      "both must be >= 1"
    )
  if batch % devices:
    raise ConfigError(
      f"config.input.global_batch_size = {batch} does not split over the "
      f"{devices} devices of the data mesh: use a multiple of {devices}"
    )
  if inp["sampler"] == "pk" and batch % k:
    raise ConfigError(
      f"config.input.global_batch_size = {batch} is not a multiple of "
      f"config.input.k = {k} (P identities x K images per batch)"
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
    eval_at_start, the untrained model's ("untrained/eval/..."); after a
    preemption notice, "preempted_at" (the step saved).
  Raises:
    ConfigError: bad config fields or values.
    WorkdirLocked: another process trains in `workdir`.
    CheckpointError: the workdir's checkpoint is incompatible (left
      untouched), or none of its checkpoints reads.
    NonFiniteLoss: training diverged (the last finite checkpoint stays).
    DiskFull: no space left (earlier checkpoints stay complete).
  """
  mesh = mesh or sharding.make_data_mesh()
  _check_run_fields(fields.resolve(config, FIELDS, "config"), mesh)
  _check_workdir(workdir)
  with workdir_lib.WorkdirLock(workdir), _disk_full_as_error(workdir):
    config = _with_selection(config, workdir)
    run = build(config, mesh, **given)
    inputs = inputs_lib.Inputs(
      run.loader, run.method.miner, run.mesh, run.encoder
    )
    state = init_state(run, inputs.sample())
    cfg = run.cfg
    ckpt = checkpoint.Checkpointer(
      workdir,
      save_steps=cfg["ckpt_steps"],
      keep=cfg["keep_ckpts"],
      best_metric=cfg["best_metric"],
      best_mode=cfg["best_mode"],
      async_save=cfg["async_ckpt"],
    )
    try:
      restored = ckpt.restore_latest(_abstract(state))
      if restored is not None:
        start, state, data_state = restored
        inputs.resume(data_state, start)
        writer_lib.say(f"resumed from {ckpt.directory} at step {start}")
      _save_config(config, workdir)
      return _run(run, state, inputs, ckpt, workdir)
    finally:
      ckpt.close()


def _with_selection(config: Any, workdir: str) -> Any:
  """`config` training on `config.select`'s image folder, if it has one.

  The search (e.g. SnP) runs once, into WORKDIR/selection/ (kept, and
  reused by a resume or an evaluation: `mining.selection.materialize`), and
  config.input becomes that `image_folder`, built into
  WORKDIR/selection/tfds unless config.input.data_dir says otherwise.
  Every process computes the features (one computation over all devices);
  process 0 writes.
  """
  cfg = fields.resolve(config, FIELDS, "config")
  if not cfg["select"]:
    return config
  from idlearn.mining import selection

  if (cfg["input"] or {}).get("manual_dir"):
    raise ConfigError(
      "config.select writes the training folder: leave "
      "config.input.manual_dir empty"
    )
  root = os.path.join(workdir, "selection")
  folder, report = selection.materialize(
    cfg["select"], root, write=jax.process_index() == 0
  )
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("idlearn.select")
  if report:
    writer_lib.say(report)
  inp = {**(cfg["input"] or {}), "name": "image_folder", "manual_dir": folder}
  inp["data_dir"] = inp.get("data_dir") or os.path.join(root, "tfds")
  return {**cfg, "input": inp}


def _check_workdir(workdir: str) -> None:
  """The workdir is a folder this process can write (probed: a read-only
  filesystem refuses root too, which `os.access` does not see)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir} is a file, not a folder")
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-probe-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(
      f"--workdir {workdir} is not writable ({e.strerror})"
    ) from None


@contextlib.contextmanager
def _disk_full_as_error(workdir: str):
  """Turns a write that found no space left into one `DiskFull` line."""
  try:
    yield
  except DiskFull:
    raise
  except Exception as e:
    if checkpoint.is_disk_full(e):
      raise DiskFull(
        errno.ENOSPC,
        f"no space left on the device of {workdir} ({e}); the checkpoints "
        "already there are complete. Free space and run the same command "
        "again to resume",
      ) from None
    raise


class _Saves:
  """Checkpoints that are written only once known to be finite.

  The state after step s is copied to the host when its save is due, its
  parameters are checked, and it is written once the loss of step s + 1
  (computed from it) is finite too, or at the end of the run. A run that
  diverges therefore never leaves a checkpoint that resumes into NaN.
  """

  def __init__(self, ckpt: checkpoint.Checkpointer):
    self.ckpt, self.held = ckpt, None

  def hold(self, step, state, data_state, metrics) -> None:
    """Copies the state after `step` to be saved once `next_loss` is known.

    Raises:
      NonFiniteLoss: its parameters are not finite.
    """
    host = checkpoint.host_copy(state)
    if not checkpoint.all_finite(host.params):
      raise NonFiniteLoss(
        self._message(f"non-finite parameters after step {step}")
      )
    self.held = (step, host, data_state, metrics)

  def next_loss(self, step: int, loss: float) -> None:
    """The loss of `step`, computed from the held state: write it or drop
    it (and stop)."""
    if not math.isfinite(loss):
      self.held = None
      raise NonFiniteLoss(
        self._message(f"non-finite loss {loss} at step {step}")
      )
    self.flush()

  def flush(self) -> None:
    if self.held is not None:
      step, host, data_state, metrics = self.held
      self.held = None
      self.ckpt.save(step, host, data_state, metrics=metrics, force=True)

  def _message(self, what: str) -> str:
    last = self.ckpt.latest_step()
    kept = (
      f"the last finite checkpoint (step {last}) in {self.ckpt.directory} "
      "is kept and a rerun resumes from it"
      if last is not None
      else "no checkpoint was written, a rerun starts from step 0"
    )
    return (
      f"{what}: training diverged; {kept}. Lower config.optim.lr, or set "
      "config.optim.clip_norm"
    )


def _run(run, state, inputs, ckpt, workdir):
  """Steps from the state's step to total_steps; returns the results."""
  cfg, total, out = run.cfg, run.cfg["total_steps"], {}
  evaluators, start = run.evaluators, int(sharding.to_host(state.step))
  writer = writer_lib.MetricWriter(workdir)
  leaving = _Leaving(run, workdir)
  saves = _Saves(ckpt)

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
  pending = None  # (step, device metrics): read one step late (async)
  for step in range(start + 1, total + 1):
    state, batch, data_state = inputs.next(state, step, report)
    batch = sharding.put_local_batch(batch, run.mesh)
    with jax.transfer_guard("disallow"):
      state, metrics = run.step_fn(state, batch)
    if saves.held is not None:  # its state made this loss: finite?
      saves.next_loss(step, float(sharding.to_host(metrics["loss"])))
    elif pending is not None:
      m = sharding.to_host(pending[1])
      if not math.isfinite(m["loss"]):
        saves.next_loss(pending[0], m["loss"])
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
      if not math.isfinite(m["loss"]):
        saves.next_loss(step, m["loss"])
      pending = None
      writer.write(step, {f"train/{k}": v for k, v in m.items()})
      progress.update(step, m)
      out.update({f"train/{k}": float(v) for k, v in m.items()})
    res = _evaluate(evals, state, step, writer) if evals else {}
    out.update(res)
    if save:
      saves.hold(step, state, data_state, res)
    leaving.best(state, step, res)
    if preempted:
      saves.flush()
      logging.warning("preempted: saved step %d, exiting", step)
      writer_lib.say(f"preempted: saved step {step} in {ckpt.directory}")
      out["preempted_at"] = step
      break
  else:
    saves.flush()
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


def restore(config: Any, workdir: str, **given: Any) -> tuple:
  """(run, state, step) of the latest readable checkpoint of `workdir`,
  built from `config` (read-only: nothing is created or written, but a
  `config.select` folder that is missing is made again).

  Raises:
    CheckpointError: no readable checkpoint in `workdir`, or an
      incompatible one.
  """
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(checkpoints):
    raise CheckpointError(f"no checkpoint in {checkpoints}")
  mesh = given.pop("mesh", None)
  given.setdefault("loader", [])  # no training input needed
  run = build(_with_selection(config, workdir), mesh, **given)
  sample = (
    run.method.miner.sample()
    if run.method.miner is not None
    else np.zeros((1, *run.input["image_size"], 3), np.uint8)
  )
  state = init_state(run, sample)
  ckpt = checkpoint.Checkpointer(
    workdir, save_steps=run.cfg["ckpt_steps"], read_only=True
  )
  try:
    restored = ckpt.restore_latest(_abstract(state))
  finally:
    ckpt.close()
  if restored is None:
    raise CheckpointError(f"no checkpoint in {checkpoints}")
  step, state, _ = restored
  return run, state, step


def evaluate(config: Any, workdir: str, **given: Any) -> dict[str, float]:
  """Runs the config's evaluators on the latest checkpoint of `workdir`.

  Creates nothing in the workdir but metrics.jsonl lines and pictures.

  Raises:
    CheckpointError: no readable checkpoint in `workdir`, or an
      incompatible one.
  """
  run, state, step = restore(config, workdir, **given)
  writer = writer_lib.MetricWriter(workdir)
  try:
    return _evaluate(run.evaluators, state, step, writer, picture_dir=workdir)
  finally:
    writer.close()

"""Orbax checkpoints of the train state and the data-iterator position.

One `CheckpointManager` per workdir (`<workdir>/checkpoints/<step>/`) with
two items: "state" (the `TrainState`, restored onto any mesh) and "data"
(each process's input-iterator state as JSON). Saves are asynchronous and
atomic (Orbax writes to a temporary directory and renames it; leftovers of
a failed write are removed at the next start), so a killed run always finds
its last complete checkpoint. A checkpoint that does not restore (a
truncated file, a deleted item, garbage metadata) is moved aside to
`<workdir>/checkpoints.unreadable/` and the previous one is used.
"""

import base64
import dataclasses
import errno
import json
import os
import shutil
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers as cm

from idlearn.errors import CheckpointError, DiskFull

PyTree = Any
UNREADABLE = "checkpoints.unreadable"
_SLACK = 1 << 16  # bytes: metadata and JSON next to the arrays


class DataStateHandler(ocp.CheckpointHandler):
  """Writes one JSON file per process: its input iterator's state."""

  def save(self, directory: epath.Path, args: "DataSave"):
    state = args.state
    if isinstance(state, bytes):  # grain DataLoader iterators use bytes
      state = {"__bytes__": base64.b64encode(state).decode("ascii")}
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    (epath.Path(directory) / name).write_text(json.dumps(state))

  def restore(self, directory: epath.Path, args: "DataRestore" = None):
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    path = epath.Path(directory) / name
    if not path.exists():
      return None  # saved by a different number of processes
    state = json.loads(path.read_text())
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
      state = base64.b64decode(state["__bytes__"])
    return state

  def metadata(self, directory: epath.Path):
    return None

  def finalize(self, directory: epath.Path):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
  state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
  pass


def _key(entry: Any) -> str:
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _shapes(tree: PyTree) -> dict[str, tuple]:
  """{"a/b/0": shape} of every leaf; dataclass fields and dict keys alike."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {
    "/".join(_key(k) for k in p): tuple(getattr(x, "shape", ()))
    for p, x in flat
  }


def is_disk_full(error: BaseException) -> bool:
  """An error (or one it wraps) from a write that found no space left."""
  while error is not None:
    if isinstance(error, OSError) and error.errno in (
      errno.ENOSPC,
      errno.EDQUOT,
    ):
      return True
    if "No space left on device" in str(error):  # tensorstore's errors
      return True
    error = error.__cause__ or error.__context__
  return False


class Checkpointer:
  """Saves every `save_steps`, keeps the `keep` latest plus the best one.

  Args:
    workdir: run directory; checkpoints go to `<workdir>/checkpoints`.
    save_steps: interval between saves (a final save is always forced).
    keep: number of latest checkpoints kept.
    best_metric: name of a metric passed to `save` (e.g.
      "eval/pku_reid/rank1"); the best checkpoint by it is also kept.
    best_mode: "max" or "min".
    async_save: write in a background thread.
    read_only: only restore (evaluation): nothing is created or written.
  """

  def __init__(
    self,
    workdir: str,
    *,
    save_steps: int,
    keep: int = 2,
    best_metric: str = "",
    best_mode: str = "max",
    async_save: bool = True,
    read_only: bool = False,
  ):
    policies = [cm.LatestN(n=keep)]
    if best_metric:
      policies.append(
        cm.BestN(
          get_metric_fn=lambda m: m[best_metric],
          reverse=best_mode == "min",
          n=1,
          keep_checkpoints_without_metrics=False,
        )
      )
    # Orbax's array writer rejects relative paths (--workdir=runs/x).
    self.workdir = epath.Path(workdir).absolute()
    self.directory = self.workdir / "checkpoints"
    self._best_metric = best_metric
    self._preempted = False
    self._previous_handler = None
    self._read_only = read_only
    self._options = ocp.CheckpointManagerOptions(
      # Every N steps (plus forced saves); no extra save at the first
      # step of a run, which the default policy adds.
      save_decision_policy=cm.AnySavePolicy(
        [
          cm.FixedIntervalPolicy(save_steps),
          cm.PreemptionCheckpointingPolicy(),
        ]
      ),
      preservation_policy=cm.AnyPreservationPolicy(policies),
      enable_async_checkpointing=async_save and not read_only,
      create=not read_only,
      read_only=read_only,
      # a write that failed (disk full, kill) leaves a temporary folder
      cleanup_tmp_directories=not read_only,
    )
    self.manager = self._manager()

  def _manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
      self.directory,
      item_handlers={
        "state": ocp.StandardCheckpointHandler(),
        "data": DataStateHandler(),
      },
      options=self._options,
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    """Whether `step` is on the save interval (or a preemption is due)."""
    return self.manager.should_save(step)

  def check_compatible(self, step: int, target: PyTree) -> None:
    """Raises CheckpointError if checkpoint `step` does not fit `target`.

    The run must not continue (and later overwrite the workdir) with a
    different model or optimizer than the one that wrote the checkpoint.
    Errors reading the metadata propagate as they are (a corrupt
    checkpoint, not an incompatible one).
    """
    meta = self.manager.item_metadata(step)["state"]
    saved, want = _shapes(meta), _shapes(target)
    if saved == want:
      return
    missing = sorted(set(want) - set(saved))[:5]
    extra = sorted(set(saved) - set(want))[:5]
    changed = [k for k in want if k in saved and saved[k] != want[k]][:5]
    details = "; ".join(
      f"{what}: {', '.join(f'{k} {saved.get(k, want.get(k))}' for k in ks)}"
      for what, ks in (
        ("only in this run", missing),
        ("only in the checkpoint", extra),
        ("different shape (checkpoint)", changed),
      )
      if ks
    )
    raise CheckpointError(
      f"the checkpoint at {self.directory / str(step)} was written by an "
      f"incompatible model or optimizer ({details}). Refusing to resume or "
      "overwrite it: pass a fresh --workdir, or restore the config that "
      "wrote it."
    )

  def restore(self, step: int, target: PyTree) -> tuple[PyTree, Any]:
    """(state, data-iterator state or None) of checkpoint `step`.

    Args:
      step: a step listed by the manager.
      target: a pytree of `jax.ShapeDtypeStruct` with the shardings wanted
        (any mesh: the checkpoint is independent of the device count).
    """
    self.check_compatible(step, target)
    out = self.manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=DataRestore()
      ),
    )
    return out["state"], out["data"]

  def restore_latest(self, target: PyTree) -> tuple[int, PyTree, Any] | None:
    """The newest checkpoint that restores: (step, state, data state).

    A checkpoint that fails to read is reported in one line, moved to
    `<workdir>/checkpoints.unreadable/<step>` (kept for inspection, out of
    the way of new saves) and the previous one is tried. None when the
    workdir has no checkpoint.

    Raises:
      CheckpointError: an incompatible checkpoint (left as it is), or none
        of the checkpoints restores (the message lists them).
    """
    tried = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return (step, *self.restore(step, target))
      except CheckpointError:
        raise
      # any failure to read = unreadable
      except Exception as e:  # noqa: BLE001
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        tried.append(f"{step} ({why})")
        where = self._set_aside(step)
        logging.warning("checkpoint %d unreadable (%s)", step, why)
        print(
          f"checkpoint {self.directory / str(step)} is unreadable ({why}); "
          f"moved to {where}, trying the previous one",
          flush=True,
        )
    if tried:
      raise CheckpointError(
        f"no checkpoint in {self.directory} could be restored; tried "
        f"{'; '.join(tried)}. They are in {self.workdir / UNREADABLE}: "
        "delete them to start over in this workdir"
      )
    return None

  def _set_aside(self, step: int) -> epath.Path:
    """Moves checkpoint `step` out of the manager's way; returns where."""
    if self._read_only:
      return self.directory / str(step)
    aside = self.workdir / UNREADABLE
    aside.mkdir(parents=True, exist_ok=True)
    dest = aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
      shutil.move(os.fspath(self.directory / str(step)), os.fspath(dest))
    self.manager.close()  # its view of the steps (and threads) is stale
    self.manager = self._manager()
    return dest

  def save(
    self,
    step: int,
    state: PyTree,
    data_state: Any,
    *,
    metrics: dict[str, float] | None = None,
    force: bool = False,
  ) -> bool:
    """Saves if `step` is due (or `force`); returns whether it saved.

    `state` may hold NumPy copies (see `host_copy`).

    Raises:
      DiskFull: this write, or the previous asynchronous one, found no
        space left.
    """
    if metrics is not None and self._best_metric:
      metrics = {k: float(np.asarray(v)) for k, v in metrics.items()}
      if self._best_metric not in metrics:
        metrics = None
    elif not self._best_metric:
      metrics = None
    self.manager.wait_until_finished()  # the space the last save takes
    self._check_space(step, state)
    try:
      return self.manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=DataSave(data_state)
        ),
        metrics=metrics,
        force=force,
      )
    except Exception as e:
      self._raise_if_disk_full(e, step)
      raise

  def _check_space(self, step: int, state: PyTree) -> None:
    """Raises DiskFull before writing when the state cannot fit: a write
    that runs out of space midway floods the log from Orbax's threads."""
    if jax.process_index() != 0:
      return
    need = sum(
      np.size(x) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state)
    )
    need += _SLACK
    free = shutil.disk_usage(self.directory).free
    if need > free:
      raise DiskFull(
        errno.ENOSPC,
        f"no space left on the device of {self.directory} for checkpoint "
        f"{step} ({need / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB "
        f"free); the checkpoints already there are complete (latest: "
        f"{self.latest_step()}). Free space and run the same command again "
        "to resume",
      )

  def _raise_if_disk_full(self, error: BaseException, step: int) -> None:
    if is_disk_full(error):
      raise DiskFull(
        errno.ENOSPC,
        f"no space left on the device of {self.directory} while saving "
        f"a checkpoint (around step {step}); the checkpoints already "
        f"there are complete (latest: {self.latest_step()}). Free space "
        "and run the same command again to resume",
      ) from None

  def preempted(self, step: int) -> bool:
    """True after SIGTERM (single process) or a JAX preemption notice."""
    return self._preempted or self.manager.reached_preemption(step)

  def watch_sigterm(self) -> None:
    """SIGTERM sets a flag; the loop then saves and exits cleanly.

    Multi-process runs rely on JAX's preemption sync (installed by
    `jax.distributed.initialize`) so that all processes stop at one step.
    """
    if jax.process_count() > 1:
      return

    def handler(signum, frame):
      del signum, frame
      self._preempted = True

    self._previous_handler = signal.signal(signal.SIGTERM, handler)

  def close(self) -> None:
    """Waits for pending saves; puts back the SIGTERM handler it replaced.

    Raises:
      DiskFull: the last asynchronous save found no space left.
    """
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      self._raise_if_disk_full(e, self.latest_step() or 0)
      raise
    finally:
      self.manager.close()


def host_copy(tree: PyTree) -> PyTree:
  """A copy of a state that the next step's donation cannot delete:
  fully replicated arrays as one NumPy copy, sharded ones (split rows) as
  a device copy that keeps their sharding.

  Orbax slices a replicated array per device before writing it: on 8
  devices that is a compiled slice per leaf shape and device (130 XLA
  compilations for a small ResNet). One host copy writes the same bytes,
  and is what the loop checks for finiteness before saving. Several
  processes keep Orbax's own path (it decides which process writes what)
  on device copies.
  """
  several = jax.process_count() > 1

  def copy(x):
    if not isinstance(x, jax.Array):
      return x
    if x.is_fully_replicated and not several:
      return np.asarray(x.addressable_data(0))
    return jnp.copy(x)

  return jax.tree.map(copy, tree)


def all_finite(tree: PyTree) -> bool:
  """Whether every floating leaf of a pytree (host or device arrays, sharded
  ones included) is finite; every process gets the same answer."""
  leaves = [
    x
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(jnp.result_type(x), jnp.floating)
  ]
  on_device = [x for x in leaves if isinstance(x, jax.Array)]
  on_host = [x for x in leaves if not isinstance(x, jax.Array)]
  if not all(np.isfinite(x).all() for x in on_host):
    return False
  return not on_device or bool(
    np.asarray(_all_finite_on_device(on_device).addressable_data(0))
  )


@jax.jit
def _all_finite_on_device(leaves):
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))

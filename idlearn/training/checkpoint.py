"""Orbax checkpoints of the train state and the data-iterator position.

One `CheckpointManager` per workdir (`<workdir>/checkpoints/<step>/`) with
two items: "state" (the `TrainState`, restored onto any mesh) and "data"
(each process's input-iterator state as JSON). Saves are asynchronous and
atomic (Orbax writes to a temporary directory and renames it), so a killed
run always finds its last complete checkpoint.
"""

import base64
import dataclasses
import json
import signal
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as cm

PyTree = Any


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
    self.directory = epath.Path(workdir).absolute() / "checkpoints"
    self._best_metric = best_metric
    self._preempted = False
    self._previous_handler = None
    self.manager = ocp.CheckpointManager(
      self.directory,
      item_handlers={
        "state": ocp.StandardCheckpointHandler(),
        "data": DataStateHandler(),
      },
      options=ocp.CheckpointManagerOptions(
        # Every N steps (plus forced saves); no extra save at the first
        # step of a run, which the default policy adds.
        save_decision_policy=cm.AnySavePolicy(
          [
            cm.FixedIntervalPolicy(save_steps),
            cm.PreemptionCheckpointingPolicy(),
          ]
        ),
        preservation_policy=cm.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save,
        create=True,
      ),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    """Whether `step` is on the save interval (or a preemption is due)."""
    return self.manager.should_save(step)

  def check_compatible(self, step: int, target: PyTree) -> None:
    """Raises ValueError if checkpoint `step` does not fit `target`'s tree.

    The run must not continue (and later overwrite the workdir) with a
    different model or optimizer than the one that wrote the checkpoint.
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
    raise ValueError(
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

  def save(
    self,
    step: int,
    state: PyTree,
    data_state: Any,
    *,
    metrics: dict[str, float] | None = None,
    force: bool = False,
  ) -> bool:
    """Saves if `step` is due (or `force`); returns whether it saved."""
    if metrics is not None and self._best_metric:
      metrics = {k: float(np.asarray(v)) for k, v in metrics.items()}
      if self._best_metric not in metrics:
        metrics = None
    elif not self._best_metric:
      metrics = None
    return self.manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(host_copy(state)),
        data=DataSave(data_state),
      ),
      metrics=metrics,
      force=force,
    )

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
    """Waits for pending saves; puts back the SIGTERM handler it replaced."""
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None
    self.manager.wait_until_finished()
    self.manager.close()


def host_copy(tree: PyTree) -> PyTree:
  """Fully replicated arrays as one NumPy copy; sharded arrays as they are.

  Orbax slices a replicated array per device before writing it: on 8
  devices that is a compiled slice per leaf shape and device (130 XLA
  compilations for a small ResNet). One host copy writes the same bytes.
  """

  def copy(x):
    if isinstance(x, jax.Array) and x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return x

  return jax.tree.map(copy, tree)

r"""Command line: train or evaluate one experiment config.

  python -m idlearn.main --config=configs/quickstart.py --workdir=runs/qs
  python -m idlearn.main --config=configs/simclr_pku_reid.py:smoke \
      --workdir=runs/smoke --config.total_steps=4
  python -m idlearn.main --config=... --workdir=runs/qs --mode=eval

Training resumes from the workdir's latest checkpoint. On several hosts,
pass --distributed (cluster auto-detection) or --coordinator_address,
--num_processes and --process_id; JAX's runtime does the rest.

Exit codes: 0 done; 1 an error (a user error is printed as one line, with
the traceback under --verbose); 75 stopped at a preemption notice
(SIGTERM) after saving: run the same command again to resume.
"""

import importlib.util
import os
import sys
from typing import Any

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from idlearn import errors
from idlearn.training import loop

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "What to do.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "Call jax.distributed.initialize() with cluster auto-detection.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (multi-process)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process.")
_VERBOSE = flags.DEFINE_bool(
  "verbose", False, "Show the traceback of expected errors too."
)


def summary(results: dict[str, float]) -> str:
  """Eval results as a table; the untrained model's next to the trained one.

  Example row: "pku_reid  rank1  untrained 14.1  trained 71.3".
  """
  rows = []
  order = ["rank1", "mAP", "rank5", "rank10", "mINP"]

  def rank(key):
    metric = key.rsplit("/", 1)[-1]
    return key.rsplit("/", 1)[0], order.index(metric) if metric in order else 9

  evals = [k for k in results if k.startswith("eval/")]
  width = max([7] + [len(k.split("/", 2)[2]) for k in evals])
  name_width = max([12] + [len(k.split("/", 2)[1]) for k in evals])
  for key, value in sorted(results.items(), key=lambda kv: rank(kv[0])):
    if not key.startswith("eval/"):
      continue
    _, name, metric = key.split("/", 2)
    before = results.get(f"untrained/{key}")
    row = f"{name:<{name_width}} {metric:<{width}}"
    if before is not None:
      row += f" untrained {100 * before:5.1f}"
    rows.append(row + f"  trained {100 * value:5.1f}")
  return "\n".join(rows)


def run(config: Any, workdir: str, mode: str = "train") -> dict[str, float]:
  """Trains (resuming) or evaluates `config` in `workdir`; prints results.

  Returns:
    The loop's results: last train metrics and "eval/<name>/<metric>"
    (plus "untrained/eval/..." when config.eval_at_start).
  """
  if mode == "eval":
    results = loop.evaluate(config, workdir)
  elif mode == "train":
    results = loop.train(config, workdir)
  else:
    raise ValueError(f"mode={mode!r}: expected 'train' or 'eval'")
  table = summary(results)
  if table and jax.process_index() == 0:
    print(f"\nResults ({mode}, workdir {workdir}), in %:\n{table}", flush=True)
  return results


def _initialize_distributed() -> None:
  if _COORDINATOR.value or (_NUM_PROCESSES.value or 1) > 1:
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required")
  if not flags.FLAGS["verbosity"].present:  # Orbax logs a lot at INFO
    logging.set_verbosity(logging.WARNING)
  _initialize_distributed()
  logging.info(
    "process %d/%d, %d devices",
    jax.process_index(),
    jax.process_count(),
    jax.device_count(),
  )
  try:
    results = run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except errors.UserError as e:
    if _VERBOSE.value:
      raise
    sys.exit(f"error: {e}")
  if "preempted_at" in results:
    sys.exit(errors.PREEMPTED_EXIT_CODE)


def _config_arg(argv: list[str]) -> str | None:
  return next(
    (a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None
  )


def check_config(argv: list[str]) -> None:
  """Fails early, in one line, on a config that cannot load: a missing
  file, an unknown `:arg`, or an unknown --config.a.b=v (ml_collections
  reports only the missing name; users need the valid ones).

  Raises:
    app.UsageError: with the message to print.
  """
  spec = _config_arg(argv)
  if not spec:
    return
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise app.UsageError(f"--config: no config file {path}")
  try:
    module_spec = importlib.util.spec_from_file_location("_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(*([arg] if arg else []))
  except (ValueError, errors.UserError) as e:
    raise app.UsageError(f"--config={spec}: {e}") from None
  paths = [
    a[len("--config.") :].split("=", 1)[0]
    for a in argv
    if a.startswith("--config.")
  ]
  for override in paths:
    node, walked = config, "config"
    for key in override.split("."):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if key not in keys:
        raise app.UsageError(
          f"--config.{override}: {walked} has no field {key!r}; valid "
          f"fields are: {', '.join(sorted(keys))}"
        )
      node, walked = node[key], f"{walked}.{key}"


def entry_point() -> None:
  """Console script `idlearn` (declared in setup.py)."""
  # Config files import `configs.common` relative to the working directory,
  # as they do under `python -m idlearn.main`.
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  try:
    check_config(sys.argv)
  except app.UsageError as e:
    sys.exit(f"error: {e}")
  app.run(main)


if __name__ == "__main__":
  entry_point()

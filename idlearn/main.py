r"""Command line: train or evaluate an experiment, and use its encoder.

  idlearn train --config=configs/quickstart.py --workdir=runs/qs
  idlearn eval --config=configs/quickstart.py --workdir=runs/qs
  idlearn embed | export | score | evaluate --model=runs/qs ...
  idlearn select --pool=NAME=DIR ... --target=DIR --ids=N --out=DIR
  idlearn <command> --help

`python -m idlearn.main --config=... --workdir=... [--mode=eval]` is
`idlearn train` / `eval`; `--config.a.b=v` overrides a config field.

Training resumes from the workdir's latest checkpoint. On several hosts,
pass --distributed (cluster auto-detection) or --coordinator_address,
--num_processes and --process_id; JAX's runtime does the rest.

Exit codes: 0 done; 1 an error (a user error is printed as one line, with
the traceback under --verbose); 75 stopped at a preemption notice
(SIGTERM) after saving: run the same command again to resume.
"""

import importlib
import os
import sys
from typing import Any

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from idlearn import errors
from idlearn.commands import COMMANDS, config_check, report
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


summary = report.summary


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
  """train / eval: the loop on --config in --workdir."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required")
  _initialize_distributed()
  logging.info(
    "process %d/%d, %d devices",
    jax.process_index(),
    jax.process_count(),
    jax.device_count(),
  )
  results = run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  if "preempted_at" in results:
    sys.exit(errors.PREEMPTED_EXIT_CODE)


def _print_help(module: str | None) -> None:
  if module is None:
    listed = "\n".join(f"  {k:<9} {v}" for k, v in COMMANDS.items())
    text = f"{__doc__}\ncommands:\n  train     (default) train a config\n"
    text += f"  eval      evaluate a workdir's latest checkpoint\n{listed}\n"
    print(text + flags.FLAGS.module_help(__name__))
    return
  print(sys.modules[module].__doc__)
  print(flags.FLAGS.module_help(module))
  print(flags.FLAGS.module_help("idlearn.commands.common"))


def _guarded(fn):
  """fn(argv) with user errors as one line (--verbose: the traceback)."""

  def run_it(argv):
    if not flags.FLAGS["verbosity"].present:  # Orbax logs a lot at INFO
      logging.set_verbosity(logging.WARNING)
    try:
      fn(argv)
    except errors.UserError as e:
      if _VERBOSE.value:
        raise
      sys.exit(f"error: {e}")

  return run_it


def entry_point() -> None:
  """Console script `idlearn` (declared in setup.py) and `python -m`."""
  # Config files import `configs.common` relative to the working directory,
  # as they do under `python -m idlearn.main`.
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  argv, module = list(sys.argv), None
  if len(argv) > 1 and not argv[1].startswith("-"):
    command = argv.pop(1)
    if command in ("train", "eval"):
      argv.append(f"--mode={command}")
    elif command in COMMANDS:
      module = f"idlearn.commands.{command}"
      importlib.import_module(module)  # defines its flags
    else:
      sys.exit(
        f"error: unknown command {command!r}: train, eval, "
        + ", ".join(COMMANDS)
      )
  if {"--help", "-h", "--helpshort"} & set(argv):
    _print_help(module)
    return
  if module is None:
    try:
      config_check.check_config(argv)
    except app.UsageError as e:
      sys.exit(f"error: {e}")
    app.run(_guarded(main), argv=argv)
  else:
    app.run(_guarded(sys.modules[module].main), argv=argv)


if __name__ == "__main__":
  entry_point()

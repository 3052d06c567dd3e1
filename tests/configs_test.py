"""Every experiment config runs its smoke variant: 2 steps, then a resume."""

import importlib.util
import json
import os
import tempfile
from pathlib import Path

import pytest

from idlearn import main

_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
_NAMES = sorted(
  p.stem
  for p in _CONFIGS.glob("*.py")
  if p.stem not in ("common",) and not p.stem.startswith("_")
)


def _load(name):
  spec = importlib.util.spec_from_file_location(
    f"configs.{name}", _CONFIGS / f"{name}.py"
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_every_config_file_is_tested():
  assert {
    "quickstart",
    "supervised_pku_reid",
    "simclr_pku_reid",
    "dcl_pku_reid",
  } <= set(_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", _NAMES)
def test_smoke_runs_two_steps_then_resumes(name):
  config = _load(name).get_config("smoke")
  full = _load(name).get_config()
  # The smoke variant changes sizes, not the structure of the experiment.
  assert set(config.to_dict()) == set(full.to_dict())
  assert config.loss.name == full.loss.name
  config.lock()
  workdir = tempfile.mkdtemp()
  results = main.run(config, workdir)
  assert "2" in os.listdir(Path(workdir, "checkpoints"))
  assert {"train/loss", "eval/pku_reid/rank1"} <= set(results)
  config.unlock()
  config.total_steps = 3
  config.eval_at_start = False
  results = main.run(config, workdir)
  steps = [
    json.loads(line)["step"] for line in open(Path(workdir, "metrics.jsonl"))
  ]
  assert steps.count(3) >= 1 and steps.count(1) == 1  # resumed at 2, not 0
  assert "eval/pku_reid/mAP" in results

"""Every experiment config runs its smoke variant: 2 steps, then a resume."""

import importlib.util
import json
import os
import tempfile
from pathlib import Path

import pytest

from configs import common
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
    "dclw_pku_reid",
    "barlow_twins_pku_reid",
    "mixed_barlow_twins_pku_reid",
    "facenet_att_faces",
    "arcface_att_faces",
    "cosface_att_faces",
    "isr_mars",
    "cion_mars",
    "domainmix_pku_mars",
  } <= set(_NAMES)


def _needs_shared_data(config) -> None:
  """Skips (saying why) when a config reads ../shared/data that is absent."""
  for value in json.dumps(config.to_dict(), default=str).split('"'):
    if value.startswith(os.path.abspath(common.SHARED_DATA)):
      if not os.path.isdir(value):
        pytest.skip(f"{value} is absent (real data kept outside the repo)")


@pytest.mark.slow
@pytest.mark.parametrize("name", _NAMES)
def test_smoke_runs_two_steps_then_resumes(name):
  config = _load(name).get_config("smoke")
  _needs_shared_data(config)
  full = _load(name).get_config()
  # The smoke variant changes sizes, not the structure of the experiment.
  assert set(config.to_dict()) == set(full.to_dict())
  assert config.loss.name == full.loss.name
  config.lock()
  workdir = tempfile.mkdtemp()
  results = main.run(config, workdir)
  assert "2" in os.listdir(Path(workdir, "checkpoints"))
  evals = [k for k in results if k.startswith("eval/")]
  assert "train/loss" in results and evals, sorted(results)
  config.unlock()
  config.total_steps = 3
  config.eval_at_start = False
  results = main.run(config, workdir)
  steps = [
    rec["step"]
    for rec in map(json.loads, open(Path(workdir, "metrics.jsonl")))
    if "train/loss" in rec
  ]
  assert steps.count(3) >= 1 and steps.count(1) == 1  # resumed at 2, not 0
  assert set(evals) <= set(results)


def test_domainmix_source_only_baseline_drops_the_target():
  full = _load("domainmix_pku_mars").get_config()
  base = _load("domainmix_pku_mars").get_config("target=False")
  assert full.pseudo_labels.name == "mars" and full.model.domain_classes == 2
  assert base.pseudo_labels is None and base.model.domain_classes == 0
  assert base.loss.name == "triplet_ce"
  assert base.evals.to_dict() == full.evals.to_dict()  # same test sets
  assert base.total_steps == full.total_steps

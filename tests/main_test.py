"""The command line: flags, overrides, eval mode, errors."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from peers import load_file
from PIL import Image
from subprocess_env import one_device_env

from idlearn import main

_ROOT = Path(__file__).resolve().parents[1]


def _quickstart(arg):
  path = _ROOT / "configs" / "quickstart.py"
  return load_file(path, "configs.quickstart").get_config(arg)


def test_summary_puts_untrained_next_to_trained():
  table = main.summary(
    {
      "eval/pku_reid/rank1": 0.5,
      "eval/pku_reid/mAP": 0.25,
      "untrained/eval/pku_reid/rank1": 0.125,
      "train/loss": 3.0,
      "untrained/eval/pku_reid/mAP": 0.0625,
      "eval/utilization/utilization": 0.0123,  # a distance, not in %
    }
  )
  assert table.splitlines() == [
    "pku_reid     rank1       untrained  12.5  trained  50.0",
    "pku_reid     mAP         untrained   6.2  trained  25.0",
    "utilization  utilization  trained 0.012",
  ]


@pytest.mark.slow
def test_cli_train_with_override_then_eval_mode():
  workdir = tempfile.mkdtemp()
  env = one_device_env(PYTHONPATH=str(_ROOT))
  cmd = [
    sys.executable,
    "-m",
    "idlearn.main",
    "--config=configs/quickstart.py:smoke",
    f"--workdir={workdir}",
    "--config.total_steps=1",
    "--config.eval_at_start=False",
  ]
  out = subprocess.run(
    cmd, cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "trained" in out.stdout and "rank1" in out.stdout
  assert os.listdir(Path(workdir, "checkpoints")) == ["1"]
  # --mode=eval through run(): the same numbers from the checkpoint.
  config = _quickstart("smoke")
  results = main.run(config, workdir, mode="eval")
  row = [
    line for line in out.stdout.splitlines() if line.split()[1:2] == ["rank1"]
  ][-1]
  printed = float(row.split()[-1])  # "pku_reid rank1 trained 5.2"
  # 1 device in the subprocess, 8 here: the same ranking up to rounding.
  assert abs(printed - 100 * results["eval/pku_reid/rank1"]) <= 0.1
  # Eval mode also draws its results into the workdir.
  for name in ("retrieval_grid.png", "cmc.png"):
    with Image.open(Path(workdir, name)) as picture:
      assert picture.format == "PNG" and min(picture.size) >= 200, name


def test_cli_rejects_unknown_config_key():
  env = one_device_env(PYTHONPATH=str(_ROOT))
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "idlearn.main",
      "--config=configs/quickstart.py:smoke",
      "--workdir=/tmp/unused",
      "--config.optim.learning_rate=0.1",
    ],
    cwd=_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode != 0
  assert "learning_rate" in out.stderr and "lr" in out.stderr


def test_unknown_config_arg_lists_known_ones():
  with pytest.raises(ValueError, match="known: .*epochs.*smoke"):
    _quickstart("smok")


def test_eval_mode_without_checkpoint_is_an_error():
  with pytest.raises(ValueError, match="no checkpoint"):
    main.run(_quickstart("smoke"), tempfile.mkdtemp(), mode="eval")

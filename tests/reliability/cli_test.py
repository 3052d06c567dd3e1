"""The command line: expected user errors are one line and a non-zero exit
(before anything is written); a preemption exits 75 after saving."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from idlearn import errors

_ROOT = Path(__file__).resolve().parents[2]
_SMOKE = "--config=configs/quickstart.py:smoke"


def _cli(*args, **kw):
  env = dict(os.environ, PYTHONPATH=os.fspath(_ROOT))
  return subprocess.run(
    [sys.executable, "-m", "idlearn.main", *args],
    cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300, **kw,
  )  # fmt: skip


def _one_line_error(out, *fragments):
  assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), out.stderr[-2000:]
  for fragment in fragments:
    assert fragment in last, last


@pytest.mark.parametrize(
  "override, fragments",
  [
    ("--config.input.global_batch_size=0", ("global_batch_size = 0",)),
    ("--config.input.k=0", ("config.input.k = 0",)),
    ("--config.ckpt_steps=0", ("config.ckpt_steps = 0", ">= 1")),
    ("--config.total_steps=0", ("config.total_steps = 0",)),
    ("--config.total_steps=-5", ("config.total_steps = -5",)),
    # 8 fake devices in the test environment (tests/conftest.py)
    ("--config.input.global_batch_size=12", ("12 does not split", "8 dev")),
    ("--config.optim.learning_rate=0.1", ("learning_rate", "lr")),
  ],
)
def test_bad_values_are_one_line_and_write_nothing(
  tmp_path, override, fragments
):
  workdir = tmp_path / "run"
  _one_line_error(_cli(_SMOKE, f"--workdir={workdir}", override), *fragments)
  assert not workdir.exists()


def test_bad_paths_are_one_line(tmp_path):
  _one_line_error(
    _cli("--config=configs/nope.py", f"--workdir={tmp_path}"), "nope.py"
  )
  _one_line_error(
    _cli("--config=configs/quickstart.py:smok", f"--workdir={tmp_path}"),
    "smok",
    "known:",
  )
  a_file = tmp_path / "file"
  a_file.write_text("x")
  _one_line_error(_cli(_SMOKE, f"--workdir={a_file}"), "is a file")
  missing = tmp_path / "missing"
  _one_line_error(
    _cli(_SMOKE, f"--workdir={missing}", "--mode=eval"), "no checkpoint"
  )
  assert not missing.exists()  # eval mode creates nothing


@pytest.mark.slow
def test_sigterm_saves_and_exits_75_then_the_same_command_resumes(tmp_path):
  args = [
    _SMOKE,
    f"--workdir={tmp_path}",
    "--config.total_steps=400",
    "--config.eval_at_start=False",
    "--config.ckpt_steps=1000",
  ]
  env = dict(os.environ, PYTHONPATH=os.fspath(_ROOT))
  proc = subprocess.Popen(
    [sys.executable, "-m", "idlearn.main", *args],
    cwd=_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
  )  # fmt: skip
  metrics = tmp_path / "metrics.jsonl"
  t0 = time.time()
  while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    assert time.time() - t0 < 240
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=240)[0].decode()
  assert proc.returncode == errors.PREEMPTED_EXIT_CODE, out[-3000:]
  saved = os.listdir(tmp_path / "checkpoints")
  assert len(saved) == 1 and 3 <= int(saved[0]) < 400  # off-interval save
  assert f"preempted: saved step {saved[0]}" in out
  out = _cli(*args[:2], "--config.total_steps=" + str(int(saved[0]) + 1))
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"at step {saved[0]}" in out.stdout

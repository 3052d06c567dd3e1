"""Real process interruptions: kill -9 and SIGTERM, then resume exactly."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import pytest

from idlearn import errors, sharding
from idlearn.training import loop

_TINY = Path(__file__).parents[1] / "tiny.py"


def _launch(workdir, *args):
  return subprocess.Popen(
    [sys.executable, str(_TINY), workdir, "--devices", "8", *args],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )


def _wait_for(pred, proc, timeout=120):
  t0 = time.time()
  while not pred():
    if proc.poll() is not None:
      raise AssertionError(
        f"trainer exited early ({proc.returncode}):\n"
        + proc.stdout.read().decode()[-3000:]
      )
    if time.time() - t0 > timeout:
      proc.kill()
      raise AssertionError("timed out waiting for the trainer")
    time.sleep(0.05)


def _finish(workdir, *args):
  out = subprocess.run(
    [sys.executable, str(_TINY), workdir, "--devices", "8", *args],
    capture_output=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()


@pytest.fixture(scope="module")
def straight(tiny):
  """20 uninterrupted steps (in this process, also on 8 devices)."""
  workdir = tempfile.mkdtemp()
  mesh = sharding.make_data_mesh(jax.devices())
  loop.train(tiny.config(20, ckpt_steps=5), workdir, mesh=mesh, **tiny.parts())
  yield tiny.read_losses(workdir)
  shutil.rmtree(workdir)


@pytest.mark.slow
def test_sigterm_then_kill_9_then_resume_repeat_the_same_losses(straight, tiny):
  """SIGTERM -> clean save + exit 75; resume; kill -9 -> resume; = straight."""
  workdir = tempfile.mkdtemp()
  try:
    args = ["--ckpt_steps", "5", "--sleep", "0.15"]
    proc = _launch(workdir, *args)
    metrics = Path(workdir, "metrics.jsonl")
    _wait_for(
      lambda: metrics.exists() and metrics.read_text().count("\n") >= 2,
      proc,
    )
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == errors.PREEMPTED_EXIT_CODE
    saved = sorted(int(s) for s in os.listdir(Path(workdir, "checkpoints")))
    stopped = max(tiny.read_losses(workdir))
    assert saved[-1] == stopped and 2 <= stopped < 10  # saved off-interval
    proc = _launch(workdir, *args)
    _wait_for(Path(workdir, "checkpoints", "10").exists, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 10 <= max(tiny.read_losses(workdir)) < 20
    _finish(workdir, "--ckpt_steps", "5")
    got = tiny.read_losses(workdir)
    # Bitwise: each resumed run recomputes its steps from the checkpoint
    # (params, BatchNorm stats, optimizer state, RNG and input position).
    assert [got[s] for s in range(1, 21)] == [straight[s] for s in range(1, 21)]
  finally:
    shutil.rmtree(workdir)

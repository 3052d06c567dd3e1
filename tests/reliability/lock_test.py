"""One run per workdir: a second launch fails in one line naming the first;
a killed holder leaves no stale lock."""

import os
import signal
import subprocess
import sys
import time

import jax
import pytest

from idlearn import errors, sharding
from idlearn.training import loop, workdir


def test_second_run_on_a_workdir_names_the_first(tiny, tmp_path):
  with workdir.WorkdirLock(os.fspath(tmp_path)):
    mesh = sharding.make_data_mesh(jax.devices())
    with pytest.raises(errors.WorkdirLocked, match=f"process {os.getpid()}"):
      loop.train(tiny.config(2), os.fspath(tmp_path), mesh=mesh, **tiny.parts())
  assert not (tmp_path / "checkpoints").exists()  # nothing written
  # released: the next run trains
  mesh = sharding.make_data_mesh(jax.devices())
  loop.train(tiny.config(2), os.fspath(tmp_path), mesh=mesh, **tiny.parts())


@pytest.mark.slow
def test_concurrent_launches_and_a_killed_holder(tiny, tmp_path):
  cmd = [sys.executable, tiny.__file__, os.fspath(tmp_path), "--devices", "1"]
  first = subprocess.Popen(
    [*cmd, "--steps", "40", "--sleep", "0.2"],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )
  metrics = tmp_path / "metrics.jsonl"
  t0 = time.time()
  while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
    assert first.poll() is None, first.stdout.read().decode()[-2000:]
    assert time.time() - t0 < 120
    time.sleep(0.1)
  second = subprocess.run([*cmd, "--steps", "40"], capture_output=True)
  assert second.returncode != 0
  assert f"in use by process {first.pid}" in second.stderr.decode()
  first.send_signal(signal.SIGKILL)
  first.wait()
  assert (tmp_path / workdir.LOCK_FILE).exists()  # left behind, not held
  third = subprocess.run([*cmd, "--steps", "4"], capture_output=True)
  assert third.returncode == 0, third.stderr.decode()[-2000:]

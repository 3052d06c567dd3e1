"""2 processes x 4 fake CPU devices == 1 process x 8 devices (gloo)."""

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from idlearn import sharding
from idlearn.training import loop


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_eight_devices(tiny):
  single, multi = tempfile.mkdtemp(), tempfile.mkdtemp()
  try:
    mesh = sharding.make_data_mesh(jax.devices())
    loop.train(tiny.config(6), single, mesh=mesh, **tiny.parts())
    port = str(_free_port())
    procs = [
      subprocess.Popen(
        [
          sys.executable,
          tiny.__file__,
          multi,
          "--steps",
          "6",
          "--devices",
          "4",
          "--processes",
          "2",
          "--process_id",
          str(i),
          "--port",
          port,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
      )
      for i in range(2)
    ]
    for p in procs:
      out, _ = p.communicate(timeout=300)
      assert p.returncode == 0, out.decode()[-4000:]
    want, got = tiny.read_losses(single), tiny.read_losses(multi)
    assert sorted(got) == list(range(1, 7))
    # Same global batch, same 8-way sharding; only the cross-process
    # all-reduce (gloo) may sum in another order.
    np.testing.assert_allclose(
      [got[s] for s in range(1, 7)],
      [want[s] for s in range(1, 7)],
      rtol=1e-6,
    )
    # Each process saved its own input position next to the shared state.
    data = Path(multi, "checkpoints", "6", "data")
    assert sorted(p.name for p in data.glob("process_*")) == [
      "process_0-of-2.json",
      "process_1-of-2.json",
    ]
  finally:
    shutil.rmtree(single)
    shutil.rmtree(multi)

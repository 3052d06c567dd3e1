"""Checkpointer: keep-N plus best, data state (JSON and bytes)."""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from idlearn import sharding
from idlearn.training import checkpoint


def _state():
  return {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(0)}


def test_keeps_latest_n_plus_best_and_restores_data_state():
  workdir = tempfile.mkdtemp()
  ck = checkpoint.Checkpointer(
    workdir, save_steps=1, keep=2, best_metric="eval/x/rank1"
  )
  scores = {2: 0.5, 4: 0.9, 6: 0.1}  # best at step 4
  for s in range(1, 9):
    metrics = {"eval/x/rank1": scores[s]} if s in scores else None
    data = b"\x00grain-bytes" if s == 8 else {"pos": s}
    assert ck.save(s, {**_state(), "step": jnp.int32(s)}, data, metrics=metrics)
  ck.close()
  kept = sorted(
    int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
  )
  assert kept == [4, 7, 8]
  ck = checkpoint.Checkpointer(workdir, save_steps=1)
  mesh = sharding.make_data_mesh(jax.devices()[:2])
  target = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=sharding.replicated(mesh)
    ),
    _state(),
  )
  st, data = ck.restore(8, target)
  assert data == b"\x00grain-bytes"
  assert st["w"].sharding == sharding.replicated(mesh)
  np.testing.assert_array_equal(st["w"], np.arange(6.0).reshape(2, 3))
  st, data = ck.restore(4, target)
  assert data == {"pos": 4} and int(st["step"]) == 4
  ck.close()


def test_relative_workdir_saves_and_restores(monkeypatch):
  # `--workdir=runs/x` is what users type; Orbax needs absolute paths.
  monkeypatch.chdir(tempfile.mkdtemp())
  ck = checkpoint.Checkpointer("runs/rel", save_steps=1)
  assert ck.save(1, _state(), {"pos": 1})
  ck.close()
  assert os.listdir(os.path.join("runs", "rel", "checkpoints")) == ["1"]
  ck = checkpoint.Checkpointer("runs/rel", save_steps=1)
  st, data = ck.restore(1, jax.tree.map(jnp.zeros_like, _state()))
  np.testing.assert_array_equal(st["w"], np.arange(6.0).reshape(2, 3))
  assert data == {"pos": 1}
  ck.close()

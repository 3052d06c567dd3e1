"""The method protocol carries what the next methods need: a throwaway
method with two trained networks and their EMA teachers (mutual-teaching
style) plugs into the registry and trains through the one loop, on 1 and 8
devices, with an exact resume; the loop and step never name a method."""

import re
import shutil
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
from preempt import preempted_after

from idlearn import losses, methods, sharding
from idlearn.encoders import backbone
from idlearn.methods import base
from idlearn.training import loop


class _Student(nn.Module):
  encoder: nn.Module

  @nn.compact
  def __call__(self, images, train=False):
    return backbone(self.encoder, "none", images, train=train)


class _TwoStudentNet(nn.Module):
  a: nn.Module
  b: nn.Module

  def __call__(self, images, train=False):
    out_a, out_b = self.a(images, train=train), self.b(images, train=train)
    return {"emb": out_a["emb"], "eval": out_a["eval"], "emb_b": out_b["emb"]}


class TwoStudents(base.Method):
  """Each student learns from the other's EMA teacher on the other view."""

  NAMES = ("two_students",)
  VIEWS = {"global": 2}
  FIELDS = {"temperature": 0.2}
  BACKBONE = ("a",)  # the first student is the one that leaves the run

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    self._nce = sharding.shard_loss(
      losses.info_nce, setup.mesh, temperature=cfg["temperature"]
    )

  def network(self):
    make = self.setup.make_encoder
    return _TwoStudentNet(a=_Student(make()), b=_Student(make()))

  def ema_decay(self):
    return base.ema_schedule(0.9, 0.0, self.setup.total_steps)

  def init_extras(self, out_shapes):
    return {"steps_seen": np.int32(0)}

  def loss(self, net, views, batch, ctx):
    v1, v2 = views["global"]
    s1, s2 = net(v1), net(v2)
    t1, t2 = net.teacher(v1), net.teacher(v2)
    la, _ = self._nce(s1["emb"], t2["emb_b"])  # student a <- teacher b
    lb, _ = self._nce(s2["emb_b"], t1["emb"])  # student b <- teacher a
    extras = {"steps_seen": ctx.extras["steps_seen"] + 1}
    return la + lb, {"loss_a": la, "loss_b": lb}, extras


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(methods.METHODS, "two_students", TwoStudents)


def _config(tiny, total):
  config = tiny.config(total)
  config.method = dict(name="two_students")
  return config


def _train(tiny, workdir, devices, total=4):
  config = _config(tiny, total)
  mesh = sharding.make_data_mesh(jax.devices()[:devices])
  return loop.train(config, workdir, mesh=mesh, **tiny.parts())


@pytest.mark.slow
def test_two_networks_train_on_1_and_8_devices_and_resume_exactly(
  registered, tiny
):
  workdirs = [tempfile.mkdtemp() for _ in range(3)]
  try:
    one, eight, resumed = workdirs
    _train(tiny, one, 1)
    _train(tiny, eight, 8)
    with preempted_after(2):
      _train(tiny, resumed, 8)
    # checkpoint 2 holds both students, both teachers and the extras
    state_dir = Path(resumed, "checkpoints", "2", "state")
    assert state_dir.is_dir()
    out = _train(tiny, resumed, 8)
    a, b, c = (tiny.read_losses(w) for w in workdirs)
    assert sorted(a) == sorted(b) == sorted(c) == [1, 2, 3, 4]
    np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-5)
    assert [b[s] for s in b] == [c[s] for s in b]  # bitwise resume
    assert "train/loss_a" in out and "train/loss_b" in out
  finally:
    for w in workdirs:
      shutil.rmtree(w)


def test_two_networks_hold_separate_parameters_and_teachers(registered, tiny):
  run = loop.build(
    _config(tiny, 4),
    sharding.make_data_mesh(jax.devices()[:1]),
    **tiny.parts(),
  )
  sample = next(iter(tiny.SyntheticLoader()))["image"][:1]
  st = loop.init_state(run, sample)
  assert set(st.params) == {"a", "b"} and set(st.ema_params) == {"a", "b"}
  assert st.extras == {"method": {"steps_seen": 0}}
  # the retrieval encoder is the first student's
  variables = run.encoder.variables(st)
  chex_equal = jax.tree.map(np.array_equal, variables["params"]["encoder"],
                            st.params["a"]["encoder"])  # fmt: skip
  assert all(jax.tree.leaves(chex_equal))


def test_loop_step_inputs_and_model_never_name_a_method():
  root = Path(__file__).resolve().parents[2] / "idlearn" / "training"
  names = sorted(methods.METHODS) + sorted(methods.MINERS)
  # whole words: "lde" is no hit in "folder"
  pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
  for module in ("loop", "step", "inputs", "model", "encoder", "eval"):
    code = [
      line
      for line in (root / f"{module}.py").read_text().splitlines()
      if not line.strip().startswith("#")
    ]
    hits = [line for line in code if pattern.search(line)]
    assert not hits, (module, hits)

"""The train loop in-process on fake devices: device-count changes, errors."""

import json
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

from idlearn import sharding
from idlearn.training import loop


def _train(tiny, workdir, devices=8, **cfg):
  mesh = sharding.make_data_mesh(jax.devices()[:devices])
  return loop.train(tiny.config(**cfg), workdir, mesh=mesh, **tiny.parts())


@pytest.fixture(scope="module")
def straight(tiny):
  """6 uninterrupted steps on 8 devices, checkpoints kept at 2, 4, 6."""
  workdir = tempfile.mkdtemp()
  _train(tiny, workdir, keep_ckpts=3)
  yield workdir
  shutil.rmtree(workdir)


def test_writes_metrics_tensorboard_config_and_checkpoints(straight, tiny):
  losses = tiny.read_losses(straight)
  assert sorted(losses) == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(v) for v in losses.values())
  assert sorted(os.listdir(os.path.join(straight, "checkpoints"))) == [
    "2",
    "4",
    "6",
  ]
  assert os.listdir(os.path.join(straight, "tensorboard"))
  cfg = json.load(open(os.path.join(straight, "config.json")))
  assert cfg["total_steps"] == 6
  # The warmup + cosine schedule as logged: lr(s) for update s-1.
  lrs = {}
  for line in open(os.path.join(straight, "metrics.jsonl")):
    rec = json.loads(line)
    lrs[rec["step"]] = rec["train/lr"]
  want = [0.0, 0.025, 0.05] + [
    0.05 * (1 + np.cos(np.pi * (s - 2) / 4)) / 2 for s in (3, 4, 5)
  ]
  np.testing.assert_allclose([lrs[s] for s in range(1, 7)], want, rtol=1e-6)


@pytest.mark.parametrize("devices", [8, 4, 1])
def test_restore_on_other_device_count_continues_same_losses(
  straight, tiny, devices
):
  """Saved on 8 devices at step 2, resumed on 8 / 4 / 1 -> same steps 3..6."""
  workdir = tempfile.mkdtemp()
  try:
    shutil.copytree(
      os.path.join(straight, "checkpoints"),
      os.path.join(workdir, "checkpoints"),
      ignore=lambda d, names: [n for n in names if n in ("4", "6")],
    )
    _train(tiny, workdir, devices=devices, keep_ckpts=3)
    got, want = tiny.read_losses(workdir), tiny.read_losses(straight)
    assert sorted(got) == [3, 4, 5, 6]
    got = [got[s] for s in range(3, 7)]
    want = [want[s] for s in range(3, 7)]
    if devices == 8:
      assert got == want  # same program, same device count: bitwise
    else:  # reductions over 8 shards vs 4 or 1 reorder float sums
      np.testing.assert_allclose(got, want, rtol=1e-5)
  finally:
    shutil.rmtree(workdir)


class _ZeroBatchAt:
  """Wraps a loader; batch number `at` (1-based) has all-zero images."""

  def __init__(self, loader, at):
    self.loader, self.at = loader, at

  def __iter__(self):
    outer, it = self, iter(self.loader)

    class It:
      def __next__(self):
        b = next(it)
        if it.get_state()["step"] == outer.at:
          b = dict(b, image=b["image"] * 0)
        return b

      def get_state(self):
        return it.get_state()

      def set_state(self, s):
        it.set_state(s)

    return It()


def test_nonfinite_loss_names_step_and_keeps_last_good_checkpoint(tiny):
  workdir = tempfile.mkdtemp()
  try:
    parts = tiny.parts()
    parts["loader"] = _ZeroBatchAt(parts["loader"], at=5)

    def views_fn(rng, images):  # 0 / 0 on the all-zero batch: NaN loss
      x = images.astype("float32")
      views = tiny.views_fn(rng, images)["global"]
      return {"global": tuple(v * x.sum() / x.sum() for v in views)}

    parts["views_fn"] = views_fn
    with pytest.raises(FloatingPointError, match="at step 5"):
      loop.train(tiny.config(total_steps=6), workdir, **parts)
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]
    assert sorted(tiny.read_losses(workdir)) == [1, 2, 3, 4]
  finally:
    shutil.rmtree(workdir)


def test_incompatible_checkpoint_refused_and_untouched(straight, tiny):
  import flax.linen as nn

  class Other(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(7)(x.mean(axis=(1, 2))), {}

  workdir = tempfile.mkdtemp()
  try:
    shutil.copytree(
      os.path.join(straight, "checkpoints"),
      os.path.join(workdir, "checkpoints"),
    )
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    parts = dict(tiny.parts(), encoder=Other())
    with pytest.raises(ValueError, match="incompatible model"):
      loop.train(tiny.config(total_steps=8), workdir, **parts)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  finally:
    shutil.rmtree(workdir)


@pytest.mark.parametrize(
  "override, message",
  [
    ({"optim": {"name": "sgd", "learning_rate": 0.1}}, "unknown field"),
    ({"optim": {"name": "sgd", "lr": "fast"}}, "expected float"),
    ({"method": {"name": "infonce"}}, "is not one of"),
    ({"log_step": 3}, "unknown field"),
  ],
)
def test_bad_config_lists_valid_fields(tiny, override, message):
  cfg = tiny.config().to_dict()
  cfg.update(override)
  with pytest.raises(ValueError, match=message) as e:
    loop.train(cfg, tempfile.mkdtemp(), **tiny.parts())
  assert "valid fields are" in str(e.value) or "simclr" in str(e.value)

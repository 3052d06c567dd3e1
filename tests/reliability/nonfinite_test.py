"""A diverging run stops naming the step and never keeps a checkpoint that
resumes into NaN: after lr=1e30 or lr=nan, a sane lr trains on."""

import math
import os

import jax
import pytest

from idlearn import errors, sharding
from idlearn.training import loop


def _train(tiny, workdir, lr, total=6, ckpt_steps=1):
  config = tiny.config(total, ckpt_steps=ckpt_steps)
  config.optim.lr, config.optim.warmup_steps = lr, 0
  mesh = sharding.make_data_mesh(jax.devices())
  return loop.train(config, os.fspath(workdir), mesh=mesh, **tiny.parts())


@pytest.mark.parametrize("lr", [1e30, float("nan")])
@pytest.mark.parametrize("ckpt_steps", [1, 2])
def test_divergence_keeps_only_finite_checkpoints_and_resumes(
  tiny, tmp_path, lr, ckpt_steps
):
  with pytest.raises(errors.NonFiniteLoss, match="at step 2|after step 1") as e:
    _train(tiny, tmp_path, lr, ckpt_steps=ckpt_steps)
  assert "diverged" in str(e.value) and "step None" not in str(e.value)
  # the update of step 1 broke the parameters: its state is not kept
  ckpts = tmp_path / "checkpoints"
  assert not ckpts.exists() or os.listdir(ckpts) == []
  assert "no checkpoint was written" in str(e.value)
  out = _train(tiny, tmp_path, 0.05)
  losses = tiny.read_losses(os.fspath(tmp_path))
  assert all(math.isfinite(losses[s]) for s in range(1, 7))
  assert math.isfinite(out["train/loss"])


def test_divergence_later_keeps_the_checkpoint_before_it(tiny, tmp_path):
  """Resumed at step 3 with lr=nan: the update of step 4 breaks the
  parameters, so checkpoint 4 is not written and 2, 3 stay."""
  _train(tiny, tmp_path, 0.05, total=3)
  with pytest.raises(errors.NonFiniteLoss, match="step 3") as e:
    _train(tiny, tmp_path, float("nan"))
  assert "(step 3)" in str(e.value)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]

"""A corrupt newest checkpoint falls back to the previous one (moved aside,
never deleted); an incompatible one is refused; none readable is one error
listing what was tried."""

import os
import shutil
from pathlib import Path

import jax
import pytest

from idlearn import errors, sharding
from idlearn.training import checkpoint, loop


def _train(tiny, workdir, total=4):
  mesh = sharding.make_data_mesh(jax.devices())
  return loop.train(tiny.config(total), workdir, mesh=mesh, **tiny.parts())


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
  """6 uninterrupted steps, checkpoints at 2, 4 and 6 kept."""
  workdir = tmp_path_factory.mktemp("straight")
  mesh = sharding.make_data_mesh(jax.devices())
  loop.train(tiny.config(6, keep_ckpts=3), os.fspath(workdir), mesh=mesh,
             **tiny.parts())  # fmt: skip
  return workdir


def _first_file(folder: Path) -> Path:
  return next(p for p in sorted(folder.rglob("*")) if p.is_file())


def _truncate_array_data(step_dir: Path):
  data = sorted((step_dir / "state").rglob("d/*"))
  for p in data:
    p.write_bytes(p.read_bytes()[:10])


CORRUPTIONS = {
  "truncated array data": _truncate_array_data,
  "state item deleted": lambda d: shutil.rmtree(d / "state"),
  "garbage _METADATA": lambda d: (d / "state" / "_METADATA").write_text("{x"),
  "garbage data state": (
    lambda d: (d / "data" / "process_0-of-1.json").write_text("\x00garbage")
  ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
  straight, tiny, tmp_path, capsys, corruption
):
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  shutil.rmtree(workdir / "checkpoints" / "6")  # resume target: 4 (bad), 2
  CORRUPTIONS[corruption](workdir / "checkpoints" / "4")
  want = tiny.read_losses(os.fspath(straight))
  _train(tiny, os.fspath(workdir), total=6)
  out = capsys.readouterr().out
  assert "checkpoints/4 is unreadable" in out and "resumed" in out
  assert "at step 2" in out
  aside = list((workdir / checkpoint.UNREADABLE).iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("4-")  # kept
  got = tiny.read_losses(os.fspath(workdir))
  assert [got[s] for s in range(3, 7)] == [want[s] for s in range(3, 7)]
  assert sorted(os.listdir(workdir / "checkpoints")) >= ["4", "6"]


def test_no_readable_checkpoint_is_one_error_listing_them(
  straight, tiny, tmp_path
):
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  for step in ("2", "4", "6"):
    shutil.rmtree(workdir / "checkpoints" / step / "state")
  with pytest.raises(errors.CheckpointError, match="tried 6 .*; 4 .*; 2 ") as e:
    _train(tiny, os.fspath(workdir), total=8)
  assert checkpoint.UNREADABLE in str(e.value)
  assert len(list((workdir / checkpoint.UNREADABLE).iterdir())) == 3


def test_incompatible_checkpoint_is_refused_not_moved(straight, tiny, tmp_path):
  import flax.linen as nn

  class Other(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(7)(x.mean(axis=(1, 2))), {}

  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  mesh = sharding.make_data_mesh(jax.devices())
  parts = dict(tiny.parts(), encoder=Other())
  with pytest.raises(errors.CheckpointError, match="incompatible model"):
    loop.train(tiny.config(8), os.fspath(workdir), mesh=mesh, **parts)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]
  assert not (workdir / checkpoint.UNREADABLE).exists()

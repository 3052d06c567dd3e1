"""A full disk: one error line, the previous checkpoint intact, no leftover
temporary folder, metrics.jsonl parseable, and the same command resumes
once space is freed. On a real tiny filesystem (a tmpfs mounted in a user
and mount namespace; then remounted read-only), and with an injected
ENOSPC."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import pytest

from idlearn import errors, sharding
from idlearn.training import checkpoint, loop


def _can_mount() -> bool:
  if not shutil.which("unshare"):
    return False
  probe = subprocess.run(
    ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
    capture_output=True,
  )
  return probe.returncode == 0


def _parse_lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_tiny_filesystem_fills_up_then_resumes(tiny, tmp_path):
  if not _can_mount():
    pytest.skip("no unshare / mount namespaces here: the injected-ENOSPC "
                "test below covers the same paths")  # fmt: skip
  workdir, out = tmp_path / "run", tmp_path / "out"
  workdir.mkdir()
  out.mkdir()
  run = f"{sys.executable} {tiny.__file__} {workdir} --devices 1 --ckpt_steps 2"
  script = textwrap.dedent(f"""
    mount -t tmpfs -o size=8m tmpfs {workdir} || exit 99
    {run} --steps 4 > {out}/log1 2>&1; echo $? > {out}/rc1
    free=$(df --output=avail -B1 {workdir} | tail -1)
    fallocate -l $((free - 24000)) {workdir}/ballast || exit 98
    {run} --steps 8 > {out}/log2 2>&1; echo $? > {out}/rc2
    ls {workdir}/checkpoints > {out}/ckpts2
    rm {workdir}/ballast
    {run} --steps 8 > {out}/log3 2>&1; echo $? > {out}/rc3
    ls {workdir}/checkpoints > {out}/ckpts3
    find {workdir} -name '*tmp*' > {out}/tmp3
    cp {workdir}/metrics.jsonl {out}/metrics.jsonl
    mount -o remount,ro {workdir}
    {run} --steps 10 > {out}/log4 2>&1; echo $? > {out}/rc4
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(["unshare", "-Urm", "sh", "-c", script], env=env)
  assert done.returncode == 0
  read = lambda name: (out / name).read_text()
  assert read("rc1").strip() == "0", read("log1")[-2000:]
  assert read("rc2").strip() == "1", read("log2")[-3000:]
  errors_shown = [ln for ln in read("log2").splitlines() if "error:" in ln]
  assert len(errors_shown) == 1 and "no space left" in errors_shown[0]
  assert "Traceback" not in read("log2")
  assert "4" in read("ckpts2").split()  # the last good one is intact
  assert read("rc3").strip() == "0", read("log3")[-2000:]
  assert "resumed" in read("log3")
  assert read("ckpts3").split() == ["6", "8"]
  assert read("tmp3") == ""  # no leftover temporary folder
  steps = [r["step"] for r in _parse_lines(out / "metrics.jsonl")]
  assert sorted(set(steps)) == list(range(1, 9))
  # a read-only filesystem (root included): one line, before any work
  assert read("rc4").strip() == "1"
  assert read("log4").strip().splitlines()[-1].startswith("error: --workdir")
  assert "not writable (Read-only file system)" in read("log4")


def test_injected_enospc_is_one_disk_full_error_and_resumes(
  tiny, tmp_path, monkeypatch
):
  mesh = sharding.make_data_mesh(jax.devices())
  loop.train(tiny.config(2), os.fspath(tmp_path), mesh=mesh, **tiny.parts())
  real_save = checkpoint.Checkpointer.save

  def full(self, step, *args, **kw):
    if step >= 4:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, step, *args, **kw)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", full)
  with pytest.raises(errors.DiskFull, match="no space left") as e:
    loop.train(tiny.config(6), os.fspath(tmp_path), mesh=mesh, **tiny.parts())
  assert "\n" not in str(e.value)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  # a write cut by the full disk: the partial line is dropped on resume
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "train/lo')
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)
  loop.train(tiny.config(6), os.fspath(tmp_path), mesh=mesh, **tiny.parts())
  steps = {r["step"] for r in _parse_lines(tmp_path / "metrics.jsonl")}
  assert steps == set(range(1, 7))

"""Benchmarks that must not rot: the GPU train-step comparison runs at a
small size on the CPU."""

import subprocess
import sys
from pathlib import Path

import pytest
from subprocess_env import one_device_env

_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_runs_small_on_cpu():
  env = one_device_env(JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "benchmarks/gpu.py", "--models=resnet18",
     "--batch=8", "--size=32,16", "--steps=1", "--warmup=1",
     "--dtype=float32"],
    cwd=_ROOT, env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [ln.split() for ln in out.stdout.splitlines()[2:]]
  assert [r[:2] for r in rows] == [
    ["resnet18", "supervised"],
    ["resnet18", "ssl"],
  ]
  assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)

"""A tiny model, synthetic loader and config for train-loop tests.

Also a script: `python tiny.py WORKDIR [options]` trains in a fresh process
(kill -9, SIGTERM and multi-process tests), with the device count set before
JAX starts.
"""

import argparse
import os
import sys
import time

import numpy as np

# Synthetic global batch: P identities x K images of 8x8 RGB.
P, K, H, W = 4, 4, 8, 8
BATCH = P * K


class _Iterator:
  def __init__(self, seed, process_index, process_count, sleep):
    self._seed, self._step, self._sleep = seed, 0, sleep
    self._pi, self._pc = process_index, process_count

  def __iter__(self):
    return self

  def __next__(self):
    if self._sleep:
      time.sleep(self._sleep)
    rng = np.random.default_rng((self._seed, self._step))
    ids = rng.choice(50, size=P, replace=False).repeat(K).astype(np.int32)
    # Images carry their identity (a per-id colour) plus noise, so the
    # model has something to learn.
    base = (ids[:, None, None, None] * 37 % 200).astype(np.float32)
    noise = rng.integers(0, 56, size=(BATCH, H, W, 3))
    image = (base + noise).astype(np.uint8)
    self._step += 1
    rows = slice(
      self._pi * BATCH // self._pc, (self._pi + 1) * BATCH // self._pc
    )
    batch = {"image": image, "id": ids, "cam": np.zeros_like(ids)}
    return {k: v[rows] for k, v in batch.items()}

  def get_state(self):
    return {"step": self._step}

  def set_state(self, state):
    self._step = state["step"]


class SyntheticLoader:
  """Deterministic P x K batches; the iterator state is the batch count."""

  def __init__(self, seed=0, process_index=0, process_count=1, sleep=0.0):
    self._args = (seed, process_index, process_count, sleep)

  def __iter__(self):
    return _Iterator(*self._args)


def tiny_encoder():
  import flax.linen as nn
  import jax.numpy as jnp

  class TinyEncoder(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = nn.Conv(8, (3, 3), strides=2)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x).mean(axis=(1, 2))
      return nn.Dense(16)(x), {}

  del jnp
  return TinyEncoder()


def views_fn(rng, images):
  """Two jittable "global" views: [0, 1] scaling + per-view noise."""
  import jax

  x = images.astype("float32") / 255.0
  r1, r2 = jax.random.split(rng)
  return {
    "global": (
      x + 0.1 * jax.random.normal(r1, x.shape),
      x + 0.1 * jax.random.normal(r2, x.shape),
    )
  }


def config(total_steps=6, **kw):
  import ml_collections

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = total_steps
  c.log_steps = 1
  c.ckpt_steps = 2
  c.keep_ckpts = 2
  c.async_ckpt = True
  c.input = dict(name="synthetic", global_batch_size=BATCH, image_size=(H, W))
  c.views = {"global": dict(count=2)}
  c.model = dict(encoder="tiny")  # the given encoder (see `parts`)
  # SimCLR's loss on the encoder's embedding (no projector)
  c.method = dict(name="simclr", temperature=0.2, proj_layers=0)
  c.optim = dict(name="sgd", lr=0.05, momentum=0.9, warmup_steps=2)
  c.update(kw)
  return c


def parts(seed=0, process_index=0, process_count=1, sleep=0.0):
  """The `given` parts for `loop.train`."""
  return dict(
    encoder=tiny_encoder(),
    loader=SyntheticLoader(seed, process_index, process_count, sleep),
    views_fn=views_fn,
    evaluators=[],
  )


def read_losses(workdir):
  """{step: train/loss} from metrics.jsonl (a later line for a step wins)."""
  import json

  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if "train/loss" in rec:
        out[rec["step"]] = rec["train/loss"]
  return out


def _main():
  ap = argparse.ArgumentParser()
  ap.add_argument("workdir")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--ckpt_steps", type=int, default=2)
  ap.add_argument("--sleep", type=float, default=0.0)
  ap.add_argument("--devices", type=int, default=1)
  ap.add_argument("--processes", type=int, default=1)
  ap.add_argument("--process_id", type=int, default=0)
  ap.add_argument("--port", type=int, default=0)
  a = ap.parse_args()
  # the test's other XLA flags (its codegen: losses repeat bit for bit),
  # with this process's device count
  from subprocess_env import one_device_env

  inherited = one_device_env().get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = (
    f"{inherited} --xla_force_host_platform_device_count={a.devices}"
  ).strip()
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax

  if a.processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=f"127.0.0.1:{a.port}",
      num_processes=a.processes,
      process_id=a.process_id,
    )
  from idlearn import errors
  from idlearn.training import loop

  cfg = config(a.steps, ckpt_steps=a.ckpt_steps)
  try:  # as idlearn.main does: user errors in one line, preemption 75
    out = loop.train(
      cfg,
      a.workdir,
      **parts(0, jax.process_index(), jax.process_count(), a.sleep),
    )
  except errors.UserError as e:
    sys.exit(f"error: {e}")
  if "preempted_at" in out:
    sys.exit(errors.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  # the repository root, when run as a script from tests/
  sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )
  _main()

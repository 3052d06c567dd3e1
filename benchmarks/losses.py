r"""Forward+backward time of idlearn's dcl / info_nce vs lightly's losses.

  python benchmarks/losses.py [--sizes 256,1024,4096] [--dim 128] [--repeats 7]

(from the repository root after `pip install -e .`, or with PYTHONPATH=.)

Both sides get the same float32 embeddings [N, d] (two views) and compute the
loss and its gradient with respect to both views. Ours is one jitted
`jax.value_and_grad` call (compiled and warmed up first, timed with
`block_until_ready`); lightly's is `loss.backward()` in eager PyTorch. Torch
runs with as many intra-op threads as JAX's CPU client uses (one per core,
printed). Each cell is the median of `--repeats` timed runs after warm-up,
ours and lightly's alternating run by run.
ratio = lightly time / ours (> 1: ours is faster).
"""

import argparse
import importlib.util
import os
import statistics
import time

import jax
import numpy as np
import torch

from idlearn.losses import dcl, info_nce


def _lightly(module: str):
  """lightly's loss module `module`, loaded as the peer tests load it."""
  path = os.path.join(
    os.path.dirname(__file__), "..", "tests", "losses", "peers_test.py"
  )
  spec = importlib.util.spec_from_file_location("_peers_test", path)
  peers = importlib.util.module_from_spec(spec)
  threads = torch.get_num_threads()
  spec.loader.exec_module(peers)  # the tests pin torch to one thread
  torch.set_num_threads(threads)
  return peers._lightly(module)


def _interleaved_medians(steps, repeats: int, warmup: int = 2):
  """Median seconds of each step; the steps alternate within every round so
  that load from other processes hits both sides alike."""
  for step in steps:
    for _ in range(warmup):
      step()
  times = [[] for _ in steps]
  for _ in range(repeats):
    for step, ts in zip(steps, times, strict=True):
      t0 = time.perf_counter()
      step()
      ts.append(time.perf_counter() - t0)
  return [statistics.median(ts) for ts in times]


def _ours_step(loss_fn, z1, z2):
  grad_fn = jax.jit(
    jax.value_and_grad(
      lambda a, b: loss_fn(a, b, temperature=0.1)[0], argnums=(0, 1)
    )
  )
  a, b = jax.device_put(z1), jax.device_put(z2)
  return lambda: jax.block_until_ready(grad_fn(a, b))


def _peer_step(loss_module, z1, z2):
  a = torch.tensor(z1, requires_grad=True)
  b = torch.tensor(z2, requires_grad=True)

  def step():
    a.grad = b.grad = None
    loss_module(a, b).backward()

  return step


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="256,1024,4096")
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--repeats", type=int, default=7)
  args = p.parse_args(argv)

  threads = os.cpu_count()
  torch.set_num_threads(threads)
  peers = {
    "dcl": (dcl, _lightly("dcl_loss").DCLLoss(temperature=0.1)),
    "info_nce": (
      info_nce,
      _lightly("ntx_ent_loss").NTXentLoss(temperature=0.1),
    ),
  }
  print(
    f"jax {jax.__version__} ({jax.devices()[0].platform}, "
    f"{threads} cores), torch {torch.__version__} "
    f"({torch.get_num_threads()} threads); d={args.dim}, "
    f"median of {args.repeats}, forward+backward"
  )
  header = f"{'loss':<9} {'N':>5} {'idlearn ms':>11} {'lightly ms':>11} "
  print(header + f"{'ratio':>6}")
  rng = np.random.default_rng(0)
  for n in (int(s) for s in args.sizes.split(",")):
    z1, z2 = rng.normal(size=(2, n, args.dim)).astype(np.float32)
    for name, (ours_fn, peer) in peers.items():
      ours, theirs = _interleaved_medians(
        [_ours_step(ours_fn, z1, z2), _peer_step(peer, z1, z2)],
        args.repeats,
      )
      print(
        f"{name:<9} {n:>5} {ours * 1e3:>11.2f} {theirs * 1e3:>11.2f} "
        f"{theirs / ours:>5.2f}x"
      )


if __name__ == "__main__":
  main()

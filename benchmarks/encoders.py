r"""Encoder speed on CPU: idlearn (JAX) vs the same PyTorch model, same run.

Forward (eval mode) and forward+backward (train mode, gradient of a scalar
loss w.r.t. all params) images/s for resnet18, resnet50 and osnet_x1_0 at
256x128, batch 64, plus FLOPs from XLA's cost analysis (XLA counts a
multiply-add as 2 FLOPs, and counts elementwise ops too).

PyTorch side: torchvision-layout ResNets from the import tests (torchvision
is not installed) and torchreid's own OSNet, with torch.set_num_threads set
to the cores JAX uses.

  python benchmarks/encoders.py                      # the table of the note
  python benchmarks/encoders.py --models=resnet18 --batch=16 --reps=2 \
      --impls=auto,native,matmul                     # compare conv paths

Measured 2026-12-04 on the shared 2-core CPU (jax 0.10.2, torch 2.13.0+cpu,
batch 64, 256x128, images/s; ratio = JAX / PyTorch). Before: commit 59d053d;
after: the commit that added `encoders/remat.py` (chunked CPU weight
gradient, hand-written BatchNorm / max-pool / dense VJPs, OSNet remat):

  python benchmarks/encoders.py --models=resnet18 --reps=3
  python benchmarks/encoders.py --models=osnet_x1_0,resnet50 --reps=2 \
      --remat=true,false

  model       f+b: before jax torch ratio | after jax torch ratio | load
  resnet18                 9.1  17.7  0.52 |       16.0  19.5  0.82 | ~1
  resnet50                 1.5   1.7  0.88 |        5.4   5.5  0.99 | 2-5 / ~1.6
  osnet_x1_0               1.6   6.0  0.27 |        9.4   5.6  1.69 | 2-5 / ~1.6
  osnet_x1_0, remat=false                  |        5.3   5.6  0.96 |

Forward (eval) ratios stayed 0.84-1.6x. With remat OSNet is both faster
and ~5x leaner (its recomputation costs less than writing and re-reading
the activations); resnet18 with `remat=true` ran 0.96x vs 1.26x without
(one run at load ~4), so ResNets keep it off by default. The absolute
numbers swing 2-3x with the machine's load; compare ratios of one run.

What was tried (per-layer and whole-model timings in this run's notes):
  - XLA's own convolution is fine on large maps but collapses on maps with
    a side below the kernel (4x2, 2x2: 1.7-2.4 GFLOP/s vs ~200) and in the
    input gradient of a stride-2 conv into such a map (8.7 GFLOP/s).
    `conv2d(impl="auto")` sends every conv with an input or output side < 8
    to an im2col matmul, and all 1x1 convs to a plain dot_general: 38x
    faster forward and 3.6x faster fwd+bwd for resnet18 at 128x64.
  - im2col everywhere ("matmul") loses on large maps (0.6x fwd); the sum
    of 9 shifted matmuls was worse than one im2col matmul (its gradient
    ran at 1-80 GFLOP/s).
  - Depthwise 3x3 (OSNet): shifted per-channel products are 5-15x faster
    than XLA's grouped convolution; autodiff of that sum made XLA fuse the
    9 padded cotangents into the next matmul's operands and recompute them
    (1x1 + depthwise fwd+bwd 0.9 s vs 0.14 s for the parts); a hand-written
    VJP (dx = depthwise conv with the flipped kernel, dw = 9 reductions)
    brought it to 0.24 s: OSNet fwd+bwd 0.17x -> ~1.0x PyTorch.
  - Max pool: XLA's reduce_window gradient (select_and_scatter) took 417 ms
    on [16, 128, 64, 64]; a max over 9 shifted views takes 90-106 ms
    (a separable 3+3 version was no better).
  - optimization_barrier around the depthwise conv did not help.
  - Threefry-keyed `model.init` under jit compiles ~4x slower than with
    rbg keys (10.8 s vs 2.7 s CPU for resnet_tiny); tests use rbg keys.
  - Conv weight gradients ran at 2-3 GFLOP/s in XLA:CPU at batch 64 and
    recover their speed on a few images at a time: `conv._cpu_conv` sums
    XLA's own weight gradient over unrolled batch chunks of ~0.5 MB
    (inside lax.scan XLA falls back to a slow generic convolution).
  - Train-mode BatchNorm (memory bound) and the max pool got hand-written
    VJPs (one reduction pass + one elementwise pass; the ReLU mask taken
    from the saved output); the 1x1 / im2col matmul's dW contracts the
    leading dim of both operands instead of transposing g.
  - nn.remat saves no memory on XLA:CPU (the barrier is dropped and all
    recomputations are scheduled at the start of the backward pass);
    `encoders.remat.recompute_in_backward` makes the recomputation depend
    on the cotangent, which XLA keeps.
"""

import argparse
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from idlearn import encoders

_ROOT = pathlib.Path(__file__).resolve().parents[1]
# the PyTorch reference models live in the tests (they import tests/peers)
sys.path.insert(0, str(_ROOT / "tests"))
from peers import load_file, peer_module  # noqa: E402


def torch_model(name: str) -> torch.nn.Module:
  """The PyTorch model of `name`, returning pooled features like ours."""
  if name.startswith("resnet"):
    ref = load_file(_ROOT / "tests/pretrained/torch_import_test.py", "_tv")
    block, layers = {
      "resnet18": (ref._TVBasic, (2, 2, 2, 2)),
      "resnet50": (ref._TVBottleneck, (3, 4, 6, 3)),
    }[name]
    return ref.TorchvisionResNet(block, layers)
  osnet = peer_module("torchreid", "reid/models/osnet.py")
  # Eval mode returns the fc features; train mode the 751-way logits (the
  # classifier costs 0.04% of the FLOPs).
  return getattr(osnet, name)(num_classes=751, pretrained=False)


def _best_interleaved(fns: dict, reps: int) -> dict:
  """Best wall time of each fn, their runs interleaved rep by rep.

  On a shared machine the load changes within seconds; alternating the
  candidates keeps each ratio's two sides under the same load.
  """
  for fn in fns.values():
    fn()  # warm-up (and compile)
  best = dict.fromkeys(fns, float("inf"))
  for _ in range(reps):
    for key, fn in fns.items():
      t = time.perf_counter()
      fn()
      best[key] = min(best[key], time.perf_counter() - t)
  return best


def jax_fns(name, images, impl, **kw):
  """(fwd, step, flops): eval forward and train fwd+bwd closures of `name`."""
  model = encoders.get_encoder(name, impl=impl, **kw)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), images[:1])
  fwd = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])

  def loss(params, stats, x):
    (emb, _), upd = model.apply(
      {"params": params, "batch_stats": stats},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    return jnp.mean(jnp.square(emb)), upd

  args = (variables["params"], variables["batch_stats"], images)
  step = jax.jit(jax.grad(loss, has_aux=True)).lower(*args).compile()
  fwd = fwd.lower(variables, images).compile()
  flops = [f.cost_analysis().get("flops", 0.0) for f in (fwd, step)]
  return (
    lambda: fwd(variables, images).block_until_ready(),
    lambda: jax.block_until_ready(step(*args)),
    flops,
  )


def torch_fns(name, images):
  """(fwd, step) closures of the PyTorch model of `name`."""
  model = torch_model(name)
  x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()

  def fwd():
    model.eval()
    with torch.no_grad():
      model(x)

  def step():
    model.train()
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()

  return fwd, step


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet18,resnet50,osnet_x1_0")
  p.add_argument("--impls", default="auto")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--size", default="256,128")
  p.add_argument("--reps", type=int, default=3)
  p.add_argument(
    "--threads",
    type=int,
    default=0,
    help="cores for both (pins this process to the first N); 0: all",
  )
  p.add_argument(
    "--remat",
    default="",
    help="encoders' remat attribute, 'true,false' to compare; '': default",
  )
  args = p.parse_args()
  if args.threads:  # before JAX's CPU client (and its thread pool) exists
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  h, w = (int(s) for s in args.size.split(","))
  images = jax.random.normal(
    jax.random.key(0, impl="rbg"), (args.batch, h, w, 3)
  )
  print(
    f"batch {args.batch}, {h}x{w}, {threads} threads, jax "
    f"{jax.__version__}, torch {torch.__version__}; images/s (best of "
    f"{args.reps}, JAX and PyTorch runs interleaved); GFLOP/img from XLA "
    "cost analysis"
  )
  head = (
    f"{'model':<11} {'impl':<12} {'fwd jax':>8} {'fwd torch':>9} "
    f"{'ratio':>6} {'f+b jax':>8} {'f+b torch':>9} {'ratio':>6} "
    f"{'GF fwd':>7} {'GF f+b':>7}"
  )
  print(head)
  print("-" * len(head))
  n = args.batch
  for name in args.models.split(","):
    variants = [(impl, {}) for impl in args.impls.split(",")]
    if args.remat and name.startswith(("osnet", "resnet")):
      variants = [
        (f"{impl},remat={r}", dict(remat=r.lower() == "true"))
        for impl, _ in variants
        for r in args.remat.split(",")
      ]
    torch_fwd, torch_step = torch_fns(name, images)
    fns = {"torch fwd": torch_fwd, "torch f+b": torch_step}
    flops = {}
    for label, kw in variants:
      fwd, step, flops[label] = jax_fns(name, images, label.split(",")[0], **kw)
      fns[label, "fwd"], fns[label, "f+b"] = fwd, step
    best = _best_interleaved(fns, args.reps)
    tt_fwd, tt_step = best["torch fwd"], best["torch f+b"]
    for label, _ in variants:
      tj_fwd, tj_step = best[label, "fwd"], best[label, "f+b"]
      f_fwd, f_step = flops[label]
      print(
        f"{name:<11} {label:<12} {n / tj_fwd:8.1f} {n / tt_fwd:9.1f} "
        f"{tt_fwd / tj_fwd:6.2f} {n / tj_step:8.1f} {n / tt_step:9.1f} "
        f"{tt_step / tj_step:6.2f} {f_fwd / n / 1e9:7.2f} "
        f"{f_step / n / 1e9:7.2f}",
        flush=True,
      )


if __name__ == "__main__":
  main()

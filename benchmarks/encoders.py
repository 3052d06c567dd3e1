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

Measured 2026-11-25 on the shared 2-core CPU (5 other engineers' jobs
running; load average 3-13, so absolute numbers swing 2-3x between runs and
only the ratios within one run mean much). jax 0.10.2, torch 2.13.0+cpu,
batch 64, images/s, best of 2; ratio = JAX / PyTorch:

  model      impl    fwd: jax  torch ratio | f+b: jax torch ratio | GF fwd/fb
  resnet50   auto         7.1    2.7  2.62 |      0.9   0.9  1.04 | 5.28/15.7
  osnet_x1_0 auto        24.1    4.2  5.80 |      2.0   2.0  1.03 | 2.01/6.01
  resnet18   auto        19.4    7.4  2.63 |      1.7   4.2  0.42 | 2.27/6.69 *
  resnet18 rerun on a quieter machine (load 3), three conv paths:
  resnet18   auto        43.0   24.4  1.77 |      7.2   8.7  0.83 | 2.27/6.69
  resnet18   matmul      14.5   24.4  0.60 |      6.0   8.7  0.68 | 2.43/7.07
  resnet18   native      46.0   24.4  1.89 |      7.1   8.7  0.82 | 2.15/6.33
  at 128x64 (the issue's case: 4x2 maps in the last stage):
  resnet18   auto       190.7   50.4  3.79 |     23.3  15.3  1.52 | 0.57/1.68
  resnet18   native       5.0   50.4  0.10 |      6.5  15.3  0.43 | 0.48/1.43
  (* my own test run shared the CPU with this row)

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
  - Remaining gap (resnet18 fwd+bwd at 256x128, ~0.8x): conv weight
    gradients and train-mode BatchNorm (memory bound: fwd 70 ms, bwd 250 ms
    on [16, 64, 32, 256]), neither of which im2col or a 2-D reshaping sped
    up.
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


def _time(fn, reps: int) -> float:
  fn()  # warm-up (and compile)
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def bench_jax(name, images, impl, reps):
  model = encoders.get_encoder(name, impl=impl)
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

  step = jax.jit(jax.grad(loss, has_aux=True))
  args = (variables["params"], variables["batch_stats"], images)
  flops = [
    f.lower(*a).compile().cost_analysis().get("flops", 0.0)
    for f, a in ((fwd, (variables, images)), (step, args))
  ]
  t_fwd = _time(lambda: fwd(variables, images).block_until_ready(), reps)
  t_step = _time(lambda: jax.block_until_ready(step(*args)), reps)
  return t_fwd, t_step, flops


def bench_torch(name, images, reps):
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

  return _time(fwd, reps), _time(step, reps)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet18,resnet50,osnet_x1_0")
  p.add_argument("--impls", default="auto")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--size", default="256,128")
  p.add_argument("--reps", type=int, default=2)
  args = p.parse_args()
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  h, w = (int(s) for s in args.size.split(","))
  images = jax.random.normal(
    jax.random.key(0, impl="rbg"), (args.batch, h, w, 3)
  )
  print(
    f"batch {args.batch}, {h}x{w}, {threads} threads, jax "
    f"{jax.__version__}, torch {torch.__version__}; images/s (best of "
    f"{args.reps}); GFLOP/img from XLA cost analysis"
  )
  head = (
    f"{'model':<11} {'impl':<7} {'fwd jax':>8} {'fwd torch':>9} "
    f"{'ratio':>6} {'f+b jax':>8} {'f+b torch':>9} {'ratio':>6} "
    f"{'GF fwd':>7} {'GF f+b':>7}"
  )
  print(head)
  print("-" * len(head))
  n = args.batch
  for name in args.models.split(","):
    tt_fwd, tt_step = bench_torch(name, images, args.reps)
    for impl in args.impls.split(","):
      tj_fwd, tj_step, (f_fwd, f_step) = bench_jax(
        name, images, impl, args.reps
      )
      print(
        f"{name:<11} {impl:<7} {n / tj_fwd:8.1f} {n / tt_fwd:9.1f} "
        f"{tt_fwd / tj_fwd:6.2f} {n / tj_step:8.1f} {n / tt_step:9.1f} "
        f"{tt_step / tj_step:6.2f} {f_fwd / n / 1e9:7.2f} "
        f"{f_step / n / 1e9:7.2f}",
        flush=True,
      )


if __name__ == "__main__":
  main()

r"""Full SSL train step on CPU: idlearn (JAX) vs the same step in PyTorch.

One step = two augmented views of a uint8 batch (random resized crop,
flip, colour jitter, grayscale), encoder + projection MLP (2048 -> 128) on
both, NT-Xent (temperature 0.1), gradients, SGD-momentum update. JAX: the
real `idlearn.training.step.train_step` under jit (views made on device by
`idlearn.augment.make_views`). PyTorch: the same model (torchvision-layout
ResNet / torchreid OSNet from benchmarks/encoders.py), the same augmentation
ops written batched in torch, NT-Xent, torch.optim.SGD. Images/s counts
input images (each yields two views).

  python benchmarks/train_step.py                       # table of the note
  python benchmarks/train_step.py --models=resnet18 --batch=16 --reps=1

Measured (2-core CPU shared with other jobs, jax 0.10.2, torch 2.13.0+cpu,
2 threads; input images/s, each image giving two views):

  model       batch  size     idlearn  torch  ratio  load
  resnet18       64  256x128      2.5    3.2   0.80   ~5
  resnet18       64  256x128      0.8    1.6   0.55  ~10
  osnet_x1_0     16  256x128      0.2    0.3   0.57  ~10  (9.4 GB peak RSS)
  osnet_x1_0     64  256x128      XLA out of memory (asked for 30 GB)

After the CPU-gradient work (4726391) and the remat fix (c567814), same
machine, 2026-12-04, load 4-6 (our experiments running beside it):

  model       batch  size     idlearn  torch  ratio  commit
  resnet18       64  256x128      3.0    3.7   0.80  59d053d (before)
  resnet18       64  256x128      3.3    3.7   0.88  5ed5406
  osnet_x1_0     64  256x128      0.5    0.9   0.53  0859814 (remat: fits;
                                  14.4 GB peak RSS of the process, both
                                  frameworks' models included)

Quickstart (configs/quickstart.py, 20 epochs at 128x64): 2:11-2:23 wall,
1.10-1.15 GB peak RSS (experiments/quickstart/README.md).
"""

import argparse
import functools
import importlib.util
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

from idlearn import augment, encoders, methods, sharding
from idlearn.training import state, step

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_VIEW = dict(
  crop_scale=(0.2, 1.0),
  flip=0.5,
  color_jitter=(0.4, 0.4, 0.4, 0.0),
  color_p=0.8,
  grayscale=0.2,
)


def _encoders_bench():
  spec = importlib.util.spec_from_file_location(
    "_bench_encoders", _ROOT / "benchmarks" / "encoders.py"
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _time(fn, reps):
  fn()  # warm-up (and compile)
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def bench_jax(name, images, reps):
  size = images.shape[1:3]
  specs = [dict(_VIEW, size=size)] * 2
  setup = methods.Setup(
    mesh=sharding.make_data_mesh(jax.devices()[:1]),
    make_encoder=lambda: encoders.get_encoder(name),
    dtype=jnp.float32,
    input={"name": "synthetic"},
    views={"global": 2},
    seed=0,
    total_steps=reps + 1,
    num_classes=lambda: 0,
  )
  method = methods.make_method({"name": "simclr"}, setup)  # proj 2048 -> 128
  network = method.network()
  tx = optax.sgd(0.1, momentum=0.9)
  x0 = jnp.zeros((2, *size, 3))
  variables = jax.jit(network.init)(jax.random.PRNGKey(0), x0)
  st = state.create(variables, tx, jax.random.PRNGKey(1))
  fn = jax.jit(
    functools.partial(
      step.train_step,
      method=method,
      network=network,
      tx=tx,
      views_fn=lambda r, im: {"global": augment.make_views(r, im, specs)},
    ),
    donate_argnums=(0,),
  )
  batch = {"image": jnp.asarray(images)}
  box = [st]

  def run():
    box[0], m = fn(box[0], batch)
    jax.block_until_ready(m["loss"])

  return _time(run, reps)


def _torch_views(x):
  """uint8 [b, 3, H, W] -> normalised float view, batched torch ops."""
  b, _, h, w = x.shape
  x = x.float() / 255
  area = torch.empty(b).uniform_(0.2, 1.0)
  logr = torch.empty(b).uniform_(np.log(3 / 4), np.log(4 / 3))
  sw = torch.sqrt(area * torch.exp(logr)).clamp(max=1)
  sh = torch.sqrt(area / torch.exp(logr)).clamp(max=1)
  flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
  theta = torch.zeros(b, 2, 3)
  theta[:, 0, 0], theta[:, 1, 1] = sw * flip, sh
  theta[:, 0, 2] = (torch.rand(b) * 2 - 1) * (1 - sw)
  theta[:, 1, 2] = (torch.rand(b) * 2 - 1) * (1 - sh)
  grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
  x = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
  on = (torch.rand(b, 1, 1, 1) < 0.8).float()
  gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(
    1, keepdim=True
  )
  for _ in range(3):  # brightness, contrast, saturation
    f = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4)
    f = on * f + (1 - on)
    x = (x * f).clamp(0, 1)
    x = (gray.mean((2, 3), keepdim=True) * (1 - f) + x * f).clamp(0, 1)
    x = (gray * (1 - f) + x * f).clamp(0, 1)
  g = (torch.rand(b, 1, 1, 1) < 0.2).float()
  x = g * gray.expand_as(x) + (1 - g) * x
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
  return (x - mean) / std


def _nt_xent(z1, z2, t=0.1):
  z = F.normalize(torch.cat([z1, z2]), dim=1)
  n = z1.shape[0]
  sim = z @ z.T / t
  sim.fill_diagonal_(float("-inf"))
  target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
  return F.cross_entropy(sim, target)


def bench_torch(name, images, reps):
  enc = _encoders_bench().torch_model(name)
  if hasattr(enc, "classifier"):  # torchreid OSNet: train mode -> features
    enc.classifier = torch.nn.Identity()
  with torch.no_grad():
    enc.eval()
    d = enc(torch.zeros(2, 3, *images.shape[1:3])).shape[1]
  proj = torch.nn.Sequential(
    torch.nn.Linear(d, 2048, bias=False),
    torch.nn.BatchNorm1d(2048),
    torch.nn.ReLU(),
    torch.nn.Linear(2048, 128),
  )
  params = list(enc.parameters()) + list(proj.parameters())
  opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
  x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).contiguous()
  enc.train()
  proj.train()

  def run():
    opt.zero_grad(set_to_none=True)
    v1, v2 = _torch_views(x), _torch_views(x)
    f1, f2 = enc(v1), enc(v2)
    loss = _nt_xent(proj(f1), proj(f2))
    loss.backward()
    opt.step()

  return _time(run, reps)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet18,osnet_x1_0")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--size", default="256,128")
  p.add_argument("--reps", type=int, default=2)
  args = p.parse_args()
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  h, w = (int(s) for s in args.size.split(","))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch, h, w, 3), dtype=np.uint8)
  print(
    f"SSL train step (2 views), batch {args.batch}, {h}x{w}, {threads} "
    f"threads, jax {jax.__version__}, torch {torch.__version__}; "
    f"input images/s, best of {args.reps}"
  )
  print(f"{'model':<11} {'idlearn':>9} {'torch':>9} {'ratio':>6}")
  for name in args.models.split(","):
    t_jax = bench_jax(name, images, args.reps)
    t_torch = bench_torch(name, images, args.reps)
    print(
      f"{name:<11} {args.batch / t_jax:>9.1f} {args.batch / t_torch:>9.1f}"
      f" {t_torch / t_jax:>6.2f}",
      flush=True,
    )


if __name__ == "__main__":
  main()

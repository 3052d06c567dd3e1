r"""Train-step throughput on one accelerator: idlearn (JAX) vs PyTorch.

Two steps, each timed in both frameworks in one run on the same device:
- supervised: one augmented view (flip), encoder -> BNNeck -> classifier
  (751 identities), batch-hard triplet (margin 0.3) on the pooled
  embedding + label-smoothed CE, P x K = 64 x 4 rows;
- ssl: two augmented views (random resized crop + flip), encoder ->
  projection MLP (2048 -> 128), DCL (temperature 0.1).
SGD with momentum; bfloat16 compute (idlearn: config.model.dtype bfloat16,
parameters float32; PyTorch: autocast bf16, channels-last). The batch is
uint8 images already on the device, so the input pipeline is not timed;
augmentation is (on the device, in both). images/s = batch / step time,
median of the timed steps after the warm-up (compilation).

  python benchmarks/gpu.py                       # the table: GPU, batch 256
  python benchmarks/gpu.py --models=resnet18 --batch=8 --size=64,32 \
      --steps=1 --warmup=1                       # small, on a CPU (tests)

PyTorch models: torchvision's resnet50 (or the test-only torchvision
layout when torchvision is absent), timm's vit_small_patch16_224 at the
input size, torchreid's OSNet loaded from its file (--torchreid=DIR: the
unpacked torchreid source). PyTorch runs eagerly (no torch.compile).

Measured 2026-12-04 on one NVIDIA H200 (jax 0.11.2 + CUDA 13, torch
2.11.0+cu130, the lent device machine; two runs of this script, commit
after 'benchmarks/gpu.py'), batch 256, 256x128, bfloat16, images/s:

  model       step         idlearn     torch  ratio
  resnet50    supervised    7762.7    5442.3   1.43
  resnet50    ssl           4077.7    2761.0   1.48
  osnet_x1_0  supervised    4831.1    3122.2   1.55
  vit_s16     supervised    8416.2    6805.2   1.24
  vit_s16     ssl           4065.6    3186.0   1.28

osnet_x1_0 ssl was not measured: the device time ran out (XLA took 270 s
to compile OSNet's supervised step). The first attempt crashed XLA's GPU
compiler (a check in its Triton GEMM fusion) on the im2col matmuls that
`conv2d(impl="auto")` used for small maps on every backend; "auto" now
keeps XLA's own convolutions on GPU / TPU.
"""

import argparse
import functools
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

_ROOT = pathlib.Path(__file__).resolve().parents[1]
# the PyTorch reference models live in the tests (they import tests/peers)
sys.path.insert(0, str(_ROOT / "tests"))
from peers import load_file  # noqa: E402

sys.path.insert(0, os.fspath(_ROOT))

from idlearn import augment, encoders, methods, sharding  # noqa: E402
from idlearn.training import state as state_lib  # noqa: E402
from idlearn.training import step as step_lib  # noqa: E402

CLASSES, K = 751, 4
SSL_VIEW = dict(crop_scale=(0.4, 1.0), crop_ratio=(0.35, 0.7), flip=0.5)


def _encoder_kw(name, size):
  kw = {"img_size": size} if name.startswith("vit") else {}
  if name.startswith("resnet"):
    kw["last_stride"] = 1
  return kw


def jax_step(name, kind, size, batch, dtype):
  """(step function, state, batch) of idlearn's real train step."""
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  setup = methods.Setup(
    mesh=mesh,
    make_encoder=lambda: encoders.get_encoder(
      name, dtype=dtype, **_encoder_kw(name, size)
    ),
    dtype=dtype,
    input={"name": "synthetic", "sampler": "pk", "k": K},
    views={"image": 1} if kind == "supervised" else {"global": 2},
    seed=0,
    total_steps=100,
    num_classes=lambda: CLASSES,
  )
  cfg = {"name": "supervised"} if kind == "supervised" else {"name": "dcl"}
  method = methods.make_method(cfg, setup)
  network = method.network()
  spec = (
    [dict(size=size, flip=0.5)]
    if kind == "supervised"
    else [dict(SSL_VIEW, size=size)] * 2
  )
  role = "image" if kind == "supervised" else "global"

  def views_fn(rng, images):
    return {role: augment.make_views(rng, images, spec)}

  tx = optax.sgd(0.05, momentum=0.9)
  x0 = jnp.zeros((2, *size, 3), jnp.float32)
  variables = jax.jit(network.init)(jax.random.key(0, impl="rbg"), x0)
  state = state_lib.create(variables, tx, jax.random.PRNGKey(1))
  fn = jax.jit(
    functools.partial(
      step_lib.train_step,
      method=method,
      network=network,
      tx=tx,
      views_fn=views_fn,
    ),
    donate_argnums=(0,),
  )
  rng = np.random.default_rng(0)
  ids = np.repeat(np.arange(batch // K), K).astype(np.int32)
  data = {
    "image": jnp.asarray(rng.integers(0, 256, (batch, *size, 3), np.uint8)),
    "id": jnp.asarray(ids),
    "label": jnp.asarray(ids % CLASSES),
  }
  return fn, state, data


def time_jax(name, kind, size, batch, dtype, steps, warmup):
  fn, state, data = jax_step(name, kind, size, batch, dtype)
  box = [state]

  def run():
    box[0], m = fn(box[0], data)
    m["loss"].block_until_ready()

  return _time(run, steps, warmup)


def _time(run, steps, warmup):
  for _ in range(warmup):
    run()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


# --- PyTorch ---------------------------------------------------------------


def torch_encoder(name, size, torchreid):
  """A PyTorch encoder returning [b, d] pooled features."""
  import torch

  if name.startswith("resnet"):
    try:
      import torchvision

      model = getattr(torchvision.models, name)(weights=None)
      block = model.layer4[0]  # last stride 1, as idlearn's re-ID ResNets
      (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = 1
      block.downsample[0].stride = 1
      model.fc = torch.nn.Identity()
      return model
    except ImportError:
      ref = load_file(_ROOT / "tests/pretrained/torch_import_test.py", "_tv")
      block, layers = {
        "resnet18": (ref._TVBasic, (2, 2, 2, 2)),
        "resnet50": (ref._TVBottleneck, (3, 4, 6, 3)),
      }[name]
      return ref.TorchvisionResNet(block, layers)
  if name.startswith("vit"):
    import timm

    arch = {"vit_s16": "vit_small_patch16_224"}[name]
    return timm.create_model(
      arch, img_size=size, num_classes=0, global_pool="token"
    )
  osnet = load_file(pathlib.Path(torchreid) / "reid/models/osnet.py", "_osnet")
  model = getattr(osnet, name)(num_classes=CLASSES, pretrained=False)
  model.classifier = torch.nn.Identity()  # train mode: features
  return model


def torch_step(name, kind, size, batch, device, torchreid):
  import torch
  import torch.nn.functional as F

  enc = torch_encoder(name, size, torchreid).to(device)
  enc = enc.to(memory_format=torch.channels_last)
  with torch.no_grad():
    enc.eval()
    d = enc(torch.zeros(2, 3, *size, device=device)).shape[1]
  enc.train()
  if kind == "supervised":
    neck = torch.nn.BatchNorm1d(d).to(device)
    neck.bias.requires_grad_(False)
    head = torch.nn.Linear(d, CLASSES, bias=False).to(device)
    parts = [enc, neck, head]
  else:
    head = torch.nn.Sequential(
      torch.nn.Linear(d, 2048, bias=False),
      torch.nn.BatchNorm1d(2048),
      torch.nn.ReLU(),
      torch.nn.Linear(2048, 128),
    ).to(device)
    parts = [enc, head]
  params = [p for m in parts for p in m.parameters() if p.requires_grad]
  opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
  gen = torch.Generator(device="cpu").manual_seed(0)
  images = torch.randint(0, 256, (batch, 3, *size), generator=gen)
  images = images.to(device, torch.uint8)
  ids = torch.arange(batch, device=device) // K
  mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

  def view(x, crop):
    b, _, h, w = x.shape
    x = (x.float() / 255 - mean) / std
    flip = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device)
    if crop:
      area = torch.empty(b, device=device).uniform_(0.4, 1.0)
      ratio = torch.empty(b, device=device).uniform_(0.35, 0.7) * h / w
      sw = torch.sqrt(area * ratio).clamp(max=1)
      sh = torch.sqrt(area / ratio).clamp(max=1)
      theta[:, 0, 2] = (torch.rand(b, device=device) * 2 - 1) * (1 - sw)
      theta[:, 1, 2] = (torch.rand(b, device=device) * 2 - 1) * (1 - sh)
    else:
      sw = sh = torch.ones(b, device=device)
    theta[:, 0, 0], theta[:, 1, 1] = sw * flip, sh
    grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)

  def triplet(emb):
    dist = torch.cdist(emb, emb)
    same = ids[:, None] == ids[None]
    pos = torch.where(same, dist, torch.zeros_like(dist)).max(1).values
    neg = torch.where(same, torch.full_like(dist, 1e9), dist).min(1).values
    return F.relu(pos - neg + 0.3).mean()

  def dcl(z1, z2, t=0.1):
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=device)

    def side(q, k):
      cross, same = q @ k.T / t, q @ q.T / t
      pos = cross.diagonal()
      neg = torch.cat(
        [cross.masked_fill(eye, -1e9), same.masked_fill(eye, -1e9)], 1
      )
      return (-pos + torch.logsumexp(neg, 1)).mean()

    return (side(z1, z2) + side(z2, z1)) / 2

  def run():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
      if kind == "supervised":
        emb = enc(view(images, crop=False)).float()
        logits = head(neck(emb))
        loss = triplet(emb) + F.cross_entropy(
          logits.float(), ids % CLASSES, label_smoothing=0.1
        )
      else:
        z = [head(enc(view(images, crop=True))).float() for _ in range(2)]
        loss = dcl(*z)
    loss.backward()
    opt.step()
    if device.type == "cuda":
      torch.cuda.synchronize()

  return run


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet50,osnet_x1_0,vit_s16")
  p.add_argument("--kinds", default="supervised,ssl")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--size", default="256,128")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--torchreid", default="", help="unpacked torchreid source")
  args = p.parse_args()
  import torch

  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  h, w = (int(s) for s in args.size.split(","))
  dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[args.dtype]
  print(
    f"train step, batch {args.batch}, {h}x{w}, {args.dtype}; jax "
    f"{jax.__version__} on {jax.devices()[0].device_kind}, torch "
    f"{torch.__version__} on {device}; images/s (median of {args.steps})",
    flush=True,
  )
  print(f"{'model':<11} {'step':<10} {'idlearn':>9} {'torch':>9} {'ratio':>6}")
  for name in args.models.split(","):
    for kind in args.kinds.split(","):
      t = time.perf_counter()
      t_jax = time_jax(
        name, kind, (h, w), args.batch, dtype, args.steps, args.warmup
      )
      t_jax_all = time.perf_counter() - t
      run = torch_step(name, kind, (h, w), args.batch, device, args.torchreid)
      t_torch = _time(run, args.steps, args.warmup)
      print(
        f"{name:<11} {kind:<10} {args.batch / t_jax:>9.1f} "
        f"{args.batch / t_torch:>9.1f} {t_torch / t_jax:>6.2f}   "
        f"(idlearn compile + run {t_jax_all:.0f} s)",
        flush=True,
      )


if __name__ == "__main__":
  main()

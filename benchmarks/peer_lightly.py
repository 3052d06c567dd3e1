r"""PyTorch + lightly peer of idlearn's self-supervised PKU-Reid runs.

Trains SimCLR (lightly's NTXentLoss) and DCL / DCL-W (lightly's DCLLoss /
DCLWLoss) in eager PyTorch with the recipe of configs/simclr_pku_reid.py,
so that lightly's numbers sit next to ours on the same split and budget:

  python benchmarks/peer_lightly.py --losses ntxent,dcl \
      --views generic,reid_bss --seeds 0,1

(from the repository root, venv active). One table row per (loss, views,
seed) as soon as it finishes, then the mean over seeds. On a CPU shared
with other jobs pass --threads 1: torch's OpenMP threads spin-wait on each
other there (measured 10x slower per step with 2 threads on 2 busy cores).

Matched with idlearn's pipeline:
  - data: idlearn's loaders (same 992 train / 192 val images, same PIL
    bilinear resize to 128x64); the batch order is idlearn's "random"
    sampler's (epoch e is np.random.default_rng([seed, e]).permutation,
    batches run across epoch ends), total_steps = epochs * 992 // batch;
  - model: torchvision-layout ResNet-18 (BasicBlock), widths (w, 2w, 4w,
    8w), last stride 1, average pooling; projector Linear(d, 512, no bias)
    -> BN -> ReLU -> Linear(512, 128); convs He-normal (fan_out) as
    idlearn and torchvision; the projector's Linear layers LeCun
    truncated-normal with zero bias as flax's Dense (not torch's default);
    BatchNorm momentum 0.1, eps 1e-5; the two views pass the model
    separately (BatchNorm statistics per view), as idlearn's train step;
  - views: the presets of configs/simclr_pku_reid.py with idlearn's
    defaults filled by idlearn.augment.views, the ops in idlearn's order
    (crop/resize, flip, colour jitter incl. hue, grayscale, BSS, ImageNet
    normalisation, random erasing filling 0). The crop box is drawn as
    idlearn.augment.ops.crop_box (area ~ U(scale), w/h log-uniform, a box
    that does not fit is clipped, not redrawn as in torchvision) and
    resampled with the same bilinear taps (half-pixel centres, clamped
    edges) through grid_sample; BSS as idlearn.augment.style;
  - optimiser: AdamW (b1 0.9, b2 0.999, eps 1e-8), lr 1e-3, weight decay
    1e-4 on parameters with ndim > 1 only; lr per step as
    optax.warmup_cosine_decay_schedule (0 -> lr over total_steps // 10,
    cosine to 0.01 * lr at total_steps);
  - evaluation: backbone embedding in eval mode, idlearn's re-ID evaluator
    (cosine, Market-1501 protocol) plain and after camera centering.

Deliberate differences:
  - random numbers come from torch's generator, not JAX's: same
    distributions, different draws (the batch order is the same);
  - the ops implement only what the presets use (no pad-crop, blur or
    resizing to another size); a preset asking for them is refused;
  - no camera adversary (cam_adv) and no checkpointing;
  - "final loss" is the mean SSL loss of the last 10 steps (idlearn's
    log window), in lightly's normalisation.

Measured: see experiments/ssl_pku_reid/README.md.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from idlearn import data
from idlearn.augment import ops
from idlearn.augment import views as idl_views
from idlearn.evaluators import reid
from idlearn.training.eval import center_cameras

_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = (128, 64)
_MEAN = torch.tensor(ops.IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(ops.IMAGENET_STD).view(1, 3, 1, 1)
_LUMA = torch.tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)
_LOG_WINDOW = 10  # idlearn's log_steps: the "final loss" averages these


# ------------------------------------------------------------------ model


class _Block(nn.Module):
  """BasicBlock: two 3x3 convs, identity or 1x1-conv + BN shortcut."""

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or cin != planes:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
      )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    short = x if self.downsample is None else self.downsample(x)
    return F.relu(y + short)


class ResNet18(nn.Module):
  """torchvision-layout ResNet-18 backbone -> pooled [n, 8 * width]."""

  def __init__(self, width: int = 16, last_stride: int = 1):
    super().__init__()
    widths = (width, 2 * width, 4 * width, 8 * width)
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    stages, cin = [], width
    for s, planes in enumerate(widths):
      stride = 1 if s == 0 else (last_stride if s == 3 else 2)
      stages.append(
        nn.Sequential(_Block(cin, planes, stride), _Block(planes, planes, 1))
      )
      cin = planes
    self.layers = nn.Sequential(*stages)
    self.feature_dim = widths[-1]
    for m in self.modules():  # He-normal fan_out, as idlearn / torchvision
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    return self.layers(x).mean((2, 3))


def _lecun_linear(cin: int, cout: int, bias: bool) -> nn.Linear:
  """Linear initialised as flax's Dense: truncated normal, variance 1/fan_in
  (the 0.8796 undoes the truncation's shrinkage), zero bias."""
  layer = nn.Linear(cin, cout, bias=bias)
  std = math.sqrt(1.0 / cin) / 0.87962566103423978
  nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
  if bias:
    nn.init.zeros_(layer.bias)
  return layer


def projection_mlp(d: int, hidden: int = 512, out: int = 128) -> nn.Module:
  """idlearn's ProjectionMLP with 2 layers: Dense -> BN -> ReLU -> Dense."""
  return nn.Sequential(
    _lecun_linear(d, hidden, bias=False),
    nn.BatchNorm1d(hidden),
    nn.ReLU(),
    _lecun_linear(hidden, out, bias=True),
  )


# ------------------------------------------------------------------ views


def view_spec(name: str, views: Mapping[str, Mapping]) -> dict:
  """Preset `name` with idlearn's defaults filled (same meaning as ours)."""
  s = idl_views._spec(views[name], SIZE)  # idlearn's own key semantics
  unsupported = [k for k in ("pad", "blur") if s[k]]
  if s["size"] != SIZE or unsupported:
    raise ValueError(f"views={name!r}: {unsupported or s['size']} unsupported")
  return s


def _uniform(b: int, lo: float, hi: float) -> torch.Tensor:
  return torch.empty(b).uniform_(lo, hi)


def _crop_flip(x: torch.Tensor, s: dict) -> torch.Tensor:
  """Random resized crop (box as ops.crop_box) + flip, bilinear taps as
  ops.resized_crop: output j samples x0 + (j + 0.5) * cw / w - 0.5, clamped
  to the image (grid_sample, align_corners=False, border padding)."""
  b, _, hh, ww = x.shape
  if s["crop_scale"] is None:  # whole image (the size is the input's)
    ch, cw = torch.full((b,), float(hh)), torch.full((b,), float(ww))
  else:
    area = _uniform(b, *s["crop_scale"]) * hh * ww
    log_r = _uniform(b, *np.log(s["crop_ratio"]))
    ch = torch.sqrt(area / log_r.exp()).clamp(1.0, hh)
    cw = torch.sqrt(area * log_r.exp()).clamp(1.0, ww)
  y0, x0 = torch.rand(b) * (hh - ch), torch.rand(b) * (ww - cw)
  sign = torch.where(torch.rand(b) < s["flip"], -1.0, 1.0)
  theta = torch.zeros(b, 2, 3)
  theta[:, 0, 0] = sign * cw / ww  # a mirrored grid is a flipped crop
  theta[:, 0, 2] = (2 * x0 + cw) / ww - 1
  theta[:, 1, 1] = ch / hh
  theta[:, 1, 2] = (2 * y0 + ch) / hh - 1
  grid = F.affine_grid(theta, [b, 3, hh, ww], align_corners=False)
  return F.grid_sample(
    x, grid, mode="bilinear", padding_mode="border", align_corners=False
  )


def _luma(x: torch.Tensor) -> torch.Tensor:
  """[b, 3, h, w] -> [b, 1, h, w] (ITU-R 601, as ops.luma)."""
  return (x * _LUMA).sum(1, keepdim=True)


def _hue_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
  """Rotates the hue by `shift` [b] turns via HSV (as ops' conversions)."""
  r, g, bl = x.unbind(1)
  v = x.amax(1)
  delta = v - x.amin(1)
  sat = torch.where(v > 0, delta / v.clamp_min(1e-12), 0.0)
  safe = torch.where(delta > 0, delta, 1.0)
  hue = torch.where(
    v == r,
    (g - bl) / safe,
    torch.where(v == g, 2.0 + (bl - r) / safe, 4.0 + (r - g) / safe),
  )
  hue = torch.where(delta > 0, torch.remainder(hue / 6.0, 1.0), 0.0)
  hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
  out = []
  for n in (5.0, 3.0, 1.0):  # piecewise-linear HSV -> RGB
    k = torch.remainder(n + 6.0 * hue, 6.0)
    out.append(v - v * sat * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
  return torch.stack(out, 1).clamp(0.0, 1.0)


def _color_jitter(x: torch.Tensor, strength: tuple) -> torch.Tensor:
  """Brightness, contrast, saturation, hue in ops.color_jitter's order."""
  bri, con, sat, hue = strength
  b = x.shape[0]
  factor = lambda s: _uniform(b, max(0.0, 1.0 - s), 1.0 + s).view(b, 1, 1, 1)
  if bri > 0:
    x = (x * factor(bri)).clamp(0.0, 1.0)
  if con > 0:
    mean = _luma(x).mean((2, 3), keepdim=True)
    x = ((x - mean) * factor(con) + mean).clamp(0.0, 1.0)
  if sat > 0:
    gray = _luma(x)
    x = ((x - gray) * factor(sat) + gray).clamp(0.0, 1.0)
  if hue > 0:
    x = _hue_shift(x, _uniform(b, -hue, hue))
  return x


def _per_image_coin(x: torch.Tensor, p: float) -> torch.Tensor:
  return (torch.rand(x.shape[0]) < p).view(-1, 1, 1, 1)


def standardize_styles(x: torch.Tensor, ratio_range: tuple) -> torch.Tensor:
  """BSS: every image gets the low-frequency Fourier amplitudes of one
  random image of the batch (window ratio ~ U(range)), phases kept."""
  b, _, h, w = x.shape
  ref = int(torch.randint(b, ()))
  ratio = float(_uniform(1, *ratio_range))
  spec = torch.fft.fft2(x)
  amp, phase = spec.abs(), spec.angle()
  fy = (torch.fft.fftfreq(h) * h).abs().view(h, 1)  # integer frequencies
  fx = (torch.fft.fftfreq(w) * w).abs().view(1, w)
  mask = (fy <= ratio * h / 2) & (fx <= ratio * w / 2)
  amp = torch.where(mask, amp[ref : ref + 1], amp)
  return torch.fft.ifft2(torch.polar(amp, phase)).real.clamp(0.0, 1.0)


def _random_erasing(x: torch.Tensor, s: dict) -> torch.Tensor:
  """One rectangle per chosen image set to 0 (the mean colour after
  normalisation); area ~ U(scale), h/w log-uniform, as ops.random_erasing."""
  b, _, h, w = x.shape
  area = _uniform(b, *s["erasing_scale"]) * h * w
  r = _uniform(b, *np.log(s["erasing_ratio"])).exp()
  eh = torch.sqrt(area * r).round().clamp(1, h)
  ew = torch.sqrt(area / r).round().clamp(1, w)
  y0 = torch.floor(torch.rand(b) * (h - eh + 1)).view(b, 1, 1)
  x0 = torch.floor(torch.rand(b) * (w - ew + 1)).view(b, 1, 1)
  yy = torch.arange(h).view(1, h, 1)
  xx = torch.arange(w).view(1, 1, w)
  inside = (yy >= y0) & (yy < y0 + eh.view(b, 1, 1))
  inside = inside & (xx >= x0) & (xx < x0 + ew.view(b, 1, 1))
  on = (torch.rand(b) < s["erasing"]).view(b, 1, 1)
  return x.masked_fill((inside & on).unsqueeze(1), 0.0)


def make_view(x: torch.Tensor, s: dict) -> torch.Tensor:
  """float [b, 3, h, w] in [0, 1] -> one normalised augmented view."""
  x = _crop_flip(x, s)
  if max(s["color_jitter"]) > 0:
    jittered = _color_jitter(x, s["color_jitter"])
    x = torch.where(_per_image_coin(x, s["color_p"]), jittered, x)
  if s["grayscale"] > 0:
    gray = _luma(x).expand_as(x)
    x = torch.where(_per_image_coin(x, s["grayscale"]), gray, x)
  p_bss = s["style_standardization"]
  if p_bss > 0 and (p_bss >= 1 or float(torch.rand(())) < p_bss):
    x = standardize_styles(x, s["style_ratio"])  # one coin per batch
  x = (x - _MEAN) / _STD
  if s["erasing"] > 0:
    x = _random_erasing(x, s)
  return x


# --------------------------------------------------------------- training


@functools.cache
def _bench_losses():
  spec = importlib.util.spec_from_file_location(
    "_bench_losses", _ROOT / "benchmarks" / "losses.py"
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def lightly_loss(name: str, temperature: float) -> nn.Module:
  """lightly's loss, loaded through benchmarks/losses.py's helper (lightly's
  package __init__ needs torchvision, absent here)."""
  mod = _bench_losses()
  if name == "ntxent":
    return mod._lightly("ntx_ent_loss").NTXentLoss(temperature=temperature)
  dcl = mod._lightly("dcl_loss")
  if name == "dcl":
    return dcl.DCLLoss(temperature=temperature)
  if name == "dclw":  # sigma as configs/simclr_pku_reid.py's dclw
    return dcl.DCLWLoss(temperature=temperature, sigma=0.5)
  raise ValueError(f"loss {name!r}: expected ntxent, dcl or dclw")


def lr_at(step: int, total: int, peak: float, end_factor: float) -> float:
  """optax.warmup_cosine_decay_schedule(0, peak, total // 10, total,
  peak * end_factor) at `step` (the count of updates done before it)."""
  warm = total // 10
  decay = max(total, warm + 1)
  if step < warm:
    return peak * step / warm
  t = min(step - warm, decay - warm) / (decay - warm)
  end = peak * end_factor
  return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * t))


class BatchOrder:
  """idlearn's "random" sampler: epoch e is rng([seed, e]).permutation(n),
  batch s covers stream positions s * b .. s * b + b - 1."""

  def __init__(self, n: int, batch: int, seed: int):
    self.n, self.batch, self.seed, self._perms = n, batch, seed, {}

  def __call__(self, step: int) -> np.ndarray:
    pos = np.arange(step * self.batch, (step + 1) * self.batch)
    return np.array([self._perm(p // self.n)[p % self.n] for p in pos])

  def _perm(self, e: int) -> np.ndarray:
    if e not in self._perms:
      self._perms[e] = np.random.default_rng([self.seed, e]).permutation(self.n)
    return self._perms[e]


def _optimizer(params: list[nn.Parameter], wd: float) -> torch.optim.AdamW:
  """AdamW with decay on ndim > 1 only (idlearn's decay_mask)."""
  groups = [
    {"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
    {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
  ]
  return torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.999), eps=1e-8)


def train(
  backbone: nn.Module,
  head: nn.Module,
  loss_fn: Callable,
  images: np.ndarray,
  spec: dict,
  args: argparse.Namespace,
  seed: int,
) -> float:
  """SSL training as configs/simclr_pku_reid.py; returns the final loss."""
  x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  total = args.epochs * len(images) // args.batch
  order = BatchOrder(len(images), args.batch, seed)
  params = list(backbone.parameters()) + list(head.parameters())
  opt = _optimizer(params, 1e-4)
  backbone.train()
  head.train()
  losses = []
  for step in range(total):
    for g in opt.param_groups:
      g["lr"] = lr_at(step, total, 1e-3, 0.01)
    x = x_all[torch.from_numpy(order(step))].float() / 255.0
    # Views pass separately: BatchNorm statistics per view, as idlearn.
    z1 = head(backbone(make_view(x, spec)))
    z2 = head(backbone(make_view(x, spec)))
    loss = loss_fn(z1, z2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(loss.item())
  return float(np.mean(losses[-_LOG_WINDOW:])) if losses else float("nan")


# ------------------------------------------------------------- evaluation


@torch.no_grad()
def embed(backbone: nn.Module, images: np.ndarray) -> np.ndarray:
  """Eval-mode backbone embeddings of uint8 [n, h, w, 3] images."""
  backbone.eval()
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
  x = (x - _MEAN) / _STD
  feats = [backbone(x[i : i + 64]) for i in range(0, len(x), 64)]
  return torch.cat(feats).numpy()


def evaluate(backbone: nn.Module, q: Mapping) -> dict[str, float]:
  """rank-1 / mAP (%) of every val image against the others, plain and
  after camera centering."""
  f, ids, cams = embed(backbone, q["image"]), q["id"], q["cam"]
  plain = reid.evaluate(f, ids, cams, f, ids, cams)
  qc, _ = center_cameras(f, cams, f, cams, same=True)
  cent = reid.evaluate(qc, ids, cams, qc, ids, cams)
  return {
    "r1": 100 * plain["rank1"],
    "mAP": 100 * plain["mAP"],
    "c_r1": 100 * cent["rank1"],
    "c_mAP": 100 * cent["mAP"],
  }


# -------------------------------------------------------------------- CLI

_COLS = ("u_r1", "u_mAP", "r1", "mAP", "c_r1", "c_mAP", "loss", "wall")
_HEADER = (
  f"{'loss':<7} {'views':<16} {'seed':>4} {'untrained':>11} "
  f"{'trained':>11} {'camnorm':>11} {'ssl loss':>8} {'wall s':>7}"
)


def _row(loss: str, views: str, seed: str, r: Mapping[str, float]) -> str:
  pair = lambda a, b: f"{r[a]:5.1f}/{r[b]:5.1f}"
  return (
    f"{loss:<7} {views:<16} {seed:>4} {pair('u_r1', 'u_mAP'):>11} "
    f"{pair('r1', 'mAP'):>11} {pair('c_r1', 'c_mAP'):>11} "
    f"{r['loss']:8.3f} {r['wall']:7.0f}"
  )


def run_one(
  loss: str, views: str, seed: int, sets: tuple, args: argparse.Namespace
) -> dict[str, float]:
  """Fresh model, untrained eval, training, trained eval."""
  train_set, q, presets = sets
  torch.manual_seed(seed)
  t0 = time.perf_counter()
  backbone = ResNet18(args.width, last_stride=1)
  head = projection_mlp(backbone.feature_dim)
  untrained = evaluate(backbone, q)
  spec = view_spec(views, presets)
  loss_fn = lightly_loss(loss, args.temperature)
  torch.set_num_threads(args.threads)
  final = train(backbone, head, loss_fn, train_set["image"], spec, args, seed)
  trained = evaluate(backbone, q)
  return {
    "u_r1": untrained["r1"],
    "u_mAP": untrained["mAP"],
    **trained,
    "loss": final,
    "wall": time.perf_counter() - t0,
  }


def _presets() -> dict:
  sys.path.insert(0, str(_ROOT))  # configs/ is not an installed package
  from configs.simclr_pku_reid import VIEWS

  return VIEWS


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--losses", default="ntxent,dcl")
  p.add_argument("--views", default="generic,reid_bss")
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--epochs", type=int, default=20)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--temperature", type=float, default=0.1)
  p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  args = p.parse_args(argv)
  torch.set_num_threads(args.threads)
  train_set = data.load_split("pku_reid", "train", image_size=SIZE)
  q, _ = data.reid_eval_sets("pku_reid", image_size=SIZE)  # q is g
  presets = _presets()
  steps = args.epochs * len(train_set["image"]) // args.batch
  print(
    f"torch {torch.__version__}, {args.threads} threads; ResNet-18 width "
    f"{args.width}, {steps} steps of {args.batch}; rank-1/mAP %",
    flush=True,
  )
  print(_HEADER, flush=True)
  results = {}
  for loss in args.losses.split(","):
    for views in args.views.split(","):
      for seed in args.seeds.split(","):
        r = run_one(loss, views, int(seed), (train_set, q, presets), args)
        results.setdefault((loss, views), []).append(r)
        print(_row(loss, views, seed, r), flush=True)
  print("mean over seeds:")
  for (loss, views), rs in results.items():
    mean = {c: float(np.mean([r[c] for r in rs])) for c in _COLS}
    print(_row(loss, views, "all", mean), flush=True)


if __name__ == "__main__":
  main()

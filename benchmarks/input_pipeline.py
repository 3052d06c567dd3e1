r"""Input pipeline throughput: idlearn (grain + jitted views) vs PyTorch.

Images/s for decode + two-view SSL augmentation at 256x128:
  idlearn: grain worker processes decode and resize (PIL) to 256x128 uint8,
    then `idlearn.augment.make_views` (jitted, on the JAX device) makes two
    views: random resized crop (0.2, 1), flip 0.5, colour jitter 0.4 (p 0.8),
    grayscale 0.2, Gaussian blur 0.5, normalise, random erasing 0.5.
  peer: a torch.utils.data.DataLoader with the same transforms done the way
    torchvision does them on PIL images (torchvision is not installed here,
    so the transforms are written below with PIL + torch tensor ops, call
    for call what torchvision's PIL path does), decoding the same files.

  python benchmarks/input_pipeline.py [--workers=2] [--batch=64] [--steps=20]

Reports host-only, device-only and end-to-end rates, and the ratio of the
end-to-end rates. Same machine, same run, peer first then idlearn.
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

_WORKERS = flags.DEFINE_integer("workers", 2, "loader worker processes")
_BATCH = flags.DEFINE_integer("batch", 64, "batch size")
_STEPS = flags.DEFINE_integer("steps", 20, "timed batches per pipeline")
_DATASET = flags.DEFINE_string(
  "dataset",
  "auto",
  "mars (../shared mars_mini, 128x256 frames), pku_reid "
  "(bundled, 48x128) or auto (mars if present)",
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (temp)")

# Run from a checkout without installing: the repo root on the path.
sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1]))

SIZE = (256, 128)  # (h, w)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SSL_VIEW = dict(
  size=SIZE,
  crop_scale=(0.2, 1.0),
  flip=0.5,
  color_jitter=0.4,
  color_p=0.8,
  grayscale=0.2,
  blur=0.5,
  erasing=0.5,
)


# --- the peer: torchvision's PIL-path transforms, written out ---------------


def _rrc_params(w, h, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
  """torchvision RandomResizedCrop.get_params."""
  area = w * h
  for _ in range(10):
    target = area * random.uniform(*scale)
    r = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = round(math.sqrt(target * r)), round(math.sqrt(target / r))
    if 0 < cw <= w and 0 < ch <= h:
      return random.randint(0, h - ch), random.randint(0, w - cw), ch, cw
  return 0, 0, h, w


def _hue(img, factor):
  """torchvision F.adjust_hue on PIL: shift the H channel of HSV."""
  from PIL import Image

  h, s, v = img.convert("HSV").split()
  arr = np.asarray(h, np.uint8)
  with np.errstate(over="ignore"):
    arr = (arr + np.uint8(int(factor * 255) % 256)).astype(np.uint8)
  return Image.merge("HSV", (Image.fromarray(arr, "L"), s, v)).convert("RGB")


def _jitter(img, s=0.4):
  """ColorJitter(s, s, s, s/4) in torchvision's random order."""
  from PIL import ImageEnhance

  ops = [
    lambda x: ImageEnhance.Brightness(x).enhance(random.uniform(1 - s, 1 + s)),
    lambda x: ImageEnhance.Contrast(x).enhance(random.uniform(1 - s, 1 + s)),
    lambda x: ImageEnhance.Color(x).enhance(random.uniform(1 - s, 1 + s)),
    lambda x: _hue(x, random.uniform(-s / 4, s / 4)),
  ]
  for i in np.random.permutation(4):
    img = ops[i](img)
  return img


def _erase(t, scale=(0.02, 0.4), ratio=(0.3, 3.3)):
  """torchvision RandomErasing(value=0) on a [3, h, w] tensor."""
  _, h, w = t.shape
  for _ in range(10):
    a = h * w * random.uniform(*scale)
    r = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
    eh, ew = round(math.sqrt(a * r)), round(math.sqrt(a / r))
    if eh < h and ew < w:
      y, x = random.randint(0, h - eh), random.randint(0, w - ew)
      t[:, y : y + eh, x : x + ew] = 0
      return t
  return t


def torch_view(img):
  """One SimCLR-style view of a PIL image -> float [3, 256, 128] tensor."""
  import torch
  from PIL import Image, ImageFilter, ImageOps

  y, x, ch, cw = _rrc_params(*img.size)
  img = img.resize(
    (SIZE[1], SIZE[0]), Image.BILINEAR, box=(x, y, x + cw, y + ch)
  )
  if random.random() < 0.5:
    img = ImageOps.mirror(img)
  if random.random() < 0.8:
    img = _jitter(img)
  if random.random() < 0.2:
    img = img.convert("L").convert("RGB")
  if random.random() < 0.5:
    img = img.filter(ImageFilter.GaussianBlur(random.uniform(0.1, 2.0)))
  t = torch.from_numpy(np.asarray(img, np.uint8).copy()).permute(2, 0, 1)
  t = t.float().div_(255)
  t = (t - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
  return _erase(t) if random.random() < 0.5 else t


class FilesDataset:
  """torch Dataset: decode a file with PIL, two views."""

  def __init__(self, paths):
    self.paths = paths

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    from PIL import Image

    with Image.open(self.paths[i]) as img:
      img = img.convert("RGB")
    return torch_view(img), torch_view(img)


def run_torch(paths, batch, workers, steps):
  import torch

  loader = torch.utils.data.DataLoader(
    FilesDataset(paths),
    batch_size=batch,
    shuffle=True,
    num_workers=workers,
    drop_last=True,
    persistent_workers=workers > 0,
    prefetch_factor=4 if workers else None,
  )
  it = _forever(loader)
  next(it)  # worker start-up is not timed
  t = time.perf_counter()
  for _ in range(steps):
    v1, v2 = next(it)
  assert tuple(v1.shape) == (batch, 3, *SIZE)
  return batch * steps / (time.perf_counter() - t)


def _forever(loader):
  while True:
    yield from loader


# --- idlearn ----------------------------------------------------------------


def run_idlearn(name, manual_dir, data_dir, batch, workers, steps):
  import jax

  from idlearn import augment, data

  def make_iter():
    return iter(
      data.make_train_loader(
        name=name,
        split="train",
        image_size=SIZE,
        global_batch_size=batch,
        num_workers=workers,
        data_dir=data_dir,
        manual_dir=manual_dir,
      )
    )

  it = make_iter()
  next(it)  # worker start-up is not timed
  t = time.perf_counter()
  for _ in range(steps):
    first = next(it)["image"]
  host = batch * steps / (time.perf_counter() - t)
  it.close()

  views = jax.jit(lambda k, x: augment.make_views(k, x, [SSL_VIEW] * 2))
  jax.block_until_ready(views(jax.random.key(0), first))  # compile
  t = time.perf_counter()
  for s in range(steps):
    jax.block_until_ready(views(jax.random.key(s), first))
  device = batch * steps / (time.perf_counter() - t)

  # End to end: the next batch is read (worker processes) while the device
  # augments the current one (JAX dispatch is asynchronous).
  it = make_iter()
  next(it)
  t = time.perf_counter()
  pending = None
  for s in range(steps):
    out = views(jax.random.key(s), next(it)["image"])
    if pending is not None:
      jax.block_until_ready(pending)
    pending = out
  jax.block_until_ready(pending)
  total = batch * steps / (time.perf_counter() - t)
  it.close()
  return host, device, total


def run_torch_host(paths, batch, workers, steps):
  """The peer's decode + resize only (its 'host' part, for reference)."""
  import torch
  from PIL import Image

  class Decode(FilesDataset):
    def __getitem__(self, i):
      with Image.open(self.paths[i]) as img:
        img = img.convert("RGB").resize((SIZE[1], SIZE[0]), Image.BILINEAR)
      return torch.from_numpy(np.asarray(img).copy())

  loader = torch.utils.data.DataLoader(
    Decode(paths),
    batch_size=batch,
    shuffle=True,
    num_workers=workers,
    drop_last=True,
    persistent_workers=workers > 0,
  )
  it = _forever(loader)
  next(it)
  t = time.perf_counter()
  for _ in range(steps):
    next(it)
  return batch * steps / (time.perf_counter() - t)


def main(argv):
  del argv
  from idlearn.data import datasets, sources

  shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
  name = _DATASET.value
  if name == "auto":
    name = "mars" if (shared / "mars_mini").is_dir() else "pku_reid"
  manual_dir = os.fspath(shared / "mars_mini") if name == "mars" else None
  data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix="idlearn_bench_")
  builder = datasets.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  root = datasets.BUILDERS[name].find_root(
    manual_dir or datasets.BUNDLED_DIR / "pku_reid"
  )
  rel = sources.split_meta(builder, "train")["path"]
  paths = [os.path.join(root, p) for p in rel]

  b, w, n = _BATCH.value, _WORKERS.value, _STEPS.value
  # The peer first: its workers fork before JAX starts threads here.
  t_host = run_torch_host(paths, b, w, n)
  t_total = run_torch(paths, b, w, n)
  i_host, i_dev, i_total = run_idlearn(name, manual_dir, data_dir, b, w, n)
  import jax

  print(
    f"dataset {name} train ({len(paths)} images), batch {b}, {w} "
    f"workers, {n} timed batches, output {SIZE[0]}x{SIZE[1]} x 2 views, "
    f"{os.cpu_count()} CPUs, JAX device {jax.devices()[0].device_kind}"
  )
  rows = [
    ("decode + resize (host)", t_host, i_host),
    ("two-view augmentation only", None, i_dev),
    ("decode + two views, end to end", t_total, i_total),
  ]
  print(
    "\n| stage (images/s) | PyTorch DataLoader (PIL) | idlearn (grain + "
    "jit) | ratio |\n|---|---|---|---|"
  )
  for label, t, i in rows:
    ratio = f"{i / t:.2f}x" if t else "-"
    peer = f"{t:.0f}" if t else "(inside the line below)"
    print(f"| {label} | {peer} | {i:.0f} | {ratio} |")


if __name__ == "__main__":
  app.run(main)

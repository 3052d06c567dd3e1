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

  python benchmarks/input_pipeline.py [--workers=2] [--batch=64] \
      [--steps=20] [--rounds=3] [--dataset=auto|mars|pku_reid]

Reports host-only, device-only and end-to-end rates (medians over rounds
that alternate the two pipelines, same machine, same run) and the ratios.

Measured 2026-11-25 on this project's 2-core CPU shared with other jobs
(load average ~10; --steps=20 --rounds=3, batch 64, 2 workers each):
  | stage (images/s) | PyTorch DataLoader (PIL) | idlearn | ratio |
  | mars_mini, 128x256 JPEG frames: decode + resize | 788 | 837 | 1.06x |
  | mars_mini: two views end to end | 60 | 74 | 1.24x |
  | pku_reid, 48x128 JPEG: decode + resize | 557 | 590 | 1.06x |
  | pku_reid: two views end to end | 47 | 64 | 1.36x |
  (the jitted two-view augmentation alone: 124 and 90 images/s on the CPU)
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
_ROUNDS = flags.DEFINE_integer("rounds", 3, "alternating timing rounds")

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


def _timed(it, batch, steps, skip=4, step_fn=None):
  """Images/s over `steps` batches after `skip` untimed ones (which drain
  what the workers prefetched while another pipeline was being timed)."""
  for _ in range(skip):
    next(it)
  t = time.perf_counter()
  for s in range(steps):
    out = next(it)
    if step_fn is not None:
      step_fn(s, out)
  if step_fn is not None:
    step_fn(None, None)
  return batch * steps / (time.perf_counter() - t)


def torch_loader(dataset, batch, workers):
  import torch

  return _forever(
    torch.utils.data.DataLoader(
      dataset,
      batch_size=batch,
      shuffle=True,
      num_workers=workers,
      drop_last=True,
      persistent_workers=workers > 0,
    )
  )


def _forever(loader):
  while True:
    yield from loader


class DecodeDataset(FilesDataset):
  """The peer's decode + resize only (its 'host' part, for reference)."""

  def __getitem__(self, i):
    import torch
    from PIL import Image

    with Image.open(self.paths[i]) as img:
      img = img.convert("RGB").resize((SIZE[1], SIZE[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy())


# --- idlearn ----------------------------------------------------------------


class Idlearn:
  """grain loader (worker processes) + jitted two-view augmentation."""

  def __init__(self, name, manual_dir, data_dir, batch, workers):
    import jax

    from idlearn import augment

    self.kw = dict(
      name=name, split="train", image_size=SIZE, global_batch_size=batch,
      num_workers=workers, data_dir=data_dir, manual_dir=manual_dir,
    )  # fmt: skip
    self.batch = batch
    self.views = jax.jit(lambda k, x: augment.make_views(k, x, [SSL_VIEW] * 2))

  def _iter(self, seed):
    from idlearn import data

    return iter(data.make_train_loader(seed=seed, **self.kw))

  def host(self, steps, seed=0):
    it = self._iter(seed)
    rate = _timed(it, self.batch, steps)
    it.close()
    return rate

  def device(self, steps):
    import jax

    it = self._iter(0)
    x = next(it)["image"]
    it.close()
    jax.block_until_ready(self.views(jax.random.key(0), x))  # compile
    t = time.perf_counter()
    for s in range(steps):
      jax.block_until_ready(self.views(jax.random.key(s), x))
    return self.batch * steps / (time.perf_counter() - t)

  def end_to_end(self, steps, seed=0):
    """The next batch is read (workers) while the device augments the
    current one: JAX dispatch is asynchronous, we wait one step behind."""
    import jax

    pending = []

    def step(s, batch):
      if pending:
        jax.block_until_ready(pending.pop())
      if batch is not None:
        pending.append(self.views(jax.random.key(s), batch["image"]))

    it = self._iter(seed)
    rate = _timed(it, self.batch, steps, step_fn=step)
    it.close()
    return rate


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

  # The peer's workers fork (once, persistent) before JAX starts threads.
  t_host_it = torch_loader(DecodeDataset(paths), b, w)
  t_full_it = torch_loader(FilesDataset(paths), b, w)
  next(t_host_it), next(t_full_it)
  ours = Idlearn(name, manual_dir, data_dir, b, w)
  i_dev = ours.device(n)
  # Rounds alternate the pipelines so that load from other jobs on this
  # shared machine hits both alike; the table gives the medians.
  rates = {k: [] for k in ("t_host", "i_host", "t_full", "i_full")}
  for r in range(_ROUNDS.value):
    rates["t_host"].append(_timed(t_host_it, b, n))
    rates["i_host"].append(ours.host(n, seed=r))
    rates["t_full"].append(_timed(t_full_it, b, n))
    rates["i_full"].append(ours.end_to_end(n, seed=r))
  import jax

  print(
    f"dataset {name} train ({len(paths)} images), batch {b}, {w} "
    f"workers, {n} timed batches x {_ROUNDS.value} alternating rounds, "
    f"output {SIZE[0]}x{SIZE[1]} x 2 views, {os.cpu_count()} CPUs, JAX "
    f"device {jax.devices()[0].device_kind}"
  )
  for k, v in rates.items():
    print(f"  {k}: " + ", ".join(f"{x:.0f}" for x in v))
  med = {k: float(np.median(v)) for k, v in rates.items()}
  rows = [
    ("decode + resize (host)", med["t_host"], med["i_host"]),
    ("two-view augmentation only", None, i_dev),
    ("decode + two views, end to end", med["t_full"], med["i_full"]),
  ]
  print(
    "\n| stage (images/s) | PyTorch DataLoader (PIL) | idlearn (grain + "
    "jit) | ratio |\n|---|---|---|---|"
  )
  for label, t, i in rows:
    ratio = f"{i / t:.2f}x" if t else "-"
    peer = f"{t:.0f}" if t else "(in the line below)"
    print(f"| {label} | {peer} | {i:.0f} | {ratio} |")


if __name__ == "__main__":
  app.run(main)

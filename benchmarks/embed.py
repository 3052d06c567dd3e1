r"""Embedding a folder of images: `idlearn embed` vs a PyTorch DataLoader loop.

The same ResNet (torchvision layout, random weights, imported into idlearn
with `pretrained.from_torch` and saved as an encoder folder; by default the
quickstart's encoder: ResNet-18 at quarter width, last stride 1) embeds
every image of a folder at 256x128: decode, RGB, bilinear resize, ImageNet
normalisation, pooled feature, L2 norm. Rows:

  idlearn embed (CLI)  `python -m idlearn.main embed ...` end to end: start,
                       JAX import, compile, read, embed, write the .npz
  idlearn.load().embed in-process, compiled (a second call)
  PyTorch DataLoader   Dataset of paths (PIL decode + resize + normalise)
                       with --workers processes, model(x) under no_grad

and the largest difference between the two libraries' unit features
(the same function: it should be ~1e-6).

  python benchmarks/embed.py                                  # PKU-Reid
  python benchmarks/embed.py --images=../shared/data/market1501_mini \
      --model=resnet50 --width=64 --last_stride=2

Prints one table.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

_ROOT = pathlib.Path(__file__).resolve().parents[1]
# the PyTorch reference models live in the tests (they import tests/peers)
sys.path.insert(0, str(_ROOT / "tests"))
from peers import load_file  # noqa: E402

sys.path.insert(0, os.fspath(_ROOT))

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torch_resnet(name: str, width: int, last_stride: int):
  ref = load_file(_ROOT / "tests/pretrained/torch_import_test.py", "_tv")
  block, layers = {
    "resnet18": (ref._TVBasic, (2, 2, 2, 2)),
    "resnet50": (ref._TVBottleneck, (3, 4, 6, 3)),
  }[name]
  widths = tuple(width * 2**i for i in range(4))
  return ref.TorchvisionResNet(
    block, layers, widths=widths, last_stride=last_stride
  ).eval()


class _Images:
  """torch Dataset: path -> normalised float32 [3, h, w]."""

  def __init__(self, paths, size):
    self.paths, self.size = paths, size

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    import numpy as np
    import torch
    from PIL import Image

    h, w = self.size
    img = Image.open(self.paths[i]).convert("RGB")
    if img.size != (w, h):
      img = img.resize((w, h), Image.BILINEAR)
    x = np.asarray(img, np.float32) / 255.0
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--images", default="idlearn/data/bundled/pku_reid")
  p.add_argument("--model", default="resnet18")
  p.add_argument("--width", type=int, default=16, help="first stage width")
  p.add_argument("--last_stride", type=int, default=1)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
  args = p.parse_args()

  import jax
  import numpy as np
  import torch

  import idlearn
  from idlearn import pretrained
  from idlearn.inference import list_images

  torch.manual_seed(0)
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  model = torch_resnet(args.model, args.width, args.last_stride)
  with torch.no_grad():  # non-trivial BN statistics
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.1, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  paths = list_images(args.images)
  size = (256, 128)
  tmp = tempfile.mkdtemp()
  folder = os.path.join(tmp, "encoder")
  encoder = {
    "widths": tuple(args.width * 2**i for i in range(4)),
    "last_stride": args.last_stride,
  }
  variables = pretrained.from_torch(args.model, model.state_dict(), **encoder)
  pretrained.save(
    folder,
    {"name": args.model, **encoder},
    variables,
    preprocessing={"image_size": size},
  )

  rows = []
  out = os.path.join(tmp, "feats.npz")
  t = time.perf_counter()
  subprocess.run(
    [sys.executable, "-m", "idlearn.main", "embed", f"--model={folder}",
     f"--images={args.images}", f"--output={out}",
     f"--batch_size={args.batch}"],
    check=True, cwd=_ROOT, capture_output=True,
  )  # fmt: skip
  rows.append(("idlearn embed (CLI, end to end)", time.perf_counter() - t))
  cli = np.load(out)

  embedder = idlearn.load(folder)
  embedder.embed(paths[: args.batch], batch_size=args.batch)  # compile
  t = time.perf_counter()
  ours = embedder.embed(paths, batch_size=args.batch)
  rows.append(("idlearn.load().embed (compiled)", time.perf_counter() - t))

  loader = torch.utils.data.DataLoader(
    _Images(paths, size), batch_size=args.batch, num_workers=args.workers
  )
  t = time.perf_counter()
  feats = []
  with torch.no_grad():
    for x in loader:
      feats.append(model(x).numpy())
  rows.append(
    (f"PyTorch DataLoader ({args.workers} workers)", time.perf_counter() - t)
  )
  theirs = np.concatenate(feats)
  theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)

  print(
    f"{len(paths)} images of {args.images} -> {args.model} features at "
    f"{size[0]}x{size[1]}, batch {args.batch}; {jax.device_count()} "
    f"{jax.default_backend()} device(s), {len(os.sched_getaffinity(0))} "
    "cores"
  )
  base = rows[-1][1]
  print(f"{'pipeline':<36} {'seconds':>8} {'img/s':>8} {'vs PyTorch':>10}")
  for name, sec in rows:
    print(f"{name:<36} {sec:8.1f} {len(paths) / sec:8.1f} {base / sec:10.2f}")
  print(
    "max |idlearn - PyTorch| of unit features: "
    f"{np.abs(ours - theirs).max():.2e} (in-process), "
    f"{np.abs(cli['features'] - theirs).max():.2e} (CLI)"
  )


if __name__ == "__main__":
  main()

r"""Exported encoders: file sizes, and onnxruntime / reloaded StableHLO
against JAX on the same images.

Each encoder (random weights, BatchNorm statistics moved per channel)
with a 128-d embedding neck is exported by `idlearn.inference.export` in
both formats (uint8 images in, unit features out, preprocessing inside);
8 random images are embedded by the Embedder (JAX), by onnxruntime on the
.onnx file and by the reloaded StableHLO. Errors are on the unit features.

  pip install -e '.[export]' && pip install --no-deps jax2onnx==0.17.1
  python benchmarks/export.py
  python benchmarks/export.py --models=resnet50,osnet_x1_0 --size=256,128

Prints one table.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

from idlearn import encoders
from idlearn.inference import Embedder, export
from idlearn.pretrained.checkpoint import DEFAULT_PREPROCESSING

_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "tests"))
from peers import load_file  # noqa: E402

# BatchNorm statistics moved per channel, as the export tests do
_EXPORT_TEST = load_file(_ROOT / "tests/inference/export_test.py", "_export")


def embedder(name: str, size: tuple[int, int]) -> Embedder:
  kw = {"img_size": size} if name.startswith("vit") else {}
  model = encoders.Backbone(
    encoder=encoders.get_encoder(name, **kw), neck="embedding", neck_dim=128
  )
  x = np.zeros((1, *size, 3), np.float32)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
  variables = _EXPORT_TEST._moved_statistics(variables)
  return Embedder(
    model, variables, dict(DEFAULT_PREPROCESSING, image_size=size)
  )


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "--models", default="resnet18,resnet50_ibn_a,osnet_x1_0,osnet_ain_x1_0"
  )
  p.add_argument("--size", default="256,128")
  p.add_argument("--vit", default="vit_s16", help="also this ViT ('' none)")
  args = p.parse_args()
  import onnxruntime as ort

  size = tuple(int(s) for s in args.size.split(","))
  names = args.models.split(",") + ([args.vit] if args.vit else [])
  rng = np.random.default_rng(0)
  tmp = tempfile.mkdtemp()
  print(
    f"{size[0]}x{size[1]} uint8 images, 128-d unit features, 8 images; "
    "max abs error of unit features vs the JAX Embedder; spread: largest "
    "deviation of a feature from the mean feature (the images differ)"
  )
  print(
    f"{'encoder':<16} {'onnx MB':>8} {'shlo MB':>8} {'spread':>7} "
    f"{'onnx err':>9} "
    f"{'shlo err':>9} {'export s':>9}"
  )
  for name in names:
    s = (224, 224) if name.startswith("vit") and size != (224, 224) else size
    emb = embedder(name, s)
    x = rng.integers(0, 256, (8, *s, 3), dtype=np.uint8)
    want = emb.embed(x)
    onnx_path = os.path.join(tmp, f"{name}.onnx")
    shlo_path = os.path.join(tmp, f"{name}.shlo")
    t = time.perf_counter()
    export.export(emb, onnx_path, "onnx")
    export.export(emb, shlo_path, "stablehlo")
    seconds = time.perf_counter() - t
    session = ort.InferenceSession(onnx_path)
    got_onnx = session.run(None, {session.get_inputs()[0].name: x})[0]
    got_shlo = np.asarray(export.load_stablehlo(shlo_path)(x))
    mb = [os.path.getsize(q) / 2**20 for q in (onnx_path, shlo_path)]
    spread = np.abs(want - want.mean(axis=0)).max()  # images differ
    print(
      f"{name:<16} {mb[0]:8.1f} {mb[1]:8.1f} {spread:7.2f} "
      f"{np.abs(got_onnx - want).max():9.1e} "
      f"{np.abs(got_shlo - want).max():9.1e} {seconds:9.1f}"
      + (f"  (at {s[0]}x{s[1]})" if s != size else "")
    )


if __name__ == "__main__":
  main()

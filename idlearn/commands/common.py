"""What the commands share: the --model / --checkpoint flags, reading
images with failures counted, and a progress bar."""

import glob
import os
import sys

import numpy as np
from absl import flags

from idlearn.errors import DataError

MODEL = flags.DEFINE_string(
  "model", None, "A training workdir or an encoder folder."
)
CHECKPOINT = flags.DEFINE_string(
  "checkpoint",
  "latest",
  "For a workdir: latest, final, best or a step number.",
)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per batch.")


def embedder():
  """`idlearn.load(--model, checkpoint=--checkpoint)`."""
  import idlearn

  if not MODEL.value:
    raise DataError("--model is required (a workdir or an encoder folder)")
  checkpoint = CHECKPOINT.value
  if checkpoint.isdecimal():
    checkpoint = int(checkpoint)
  return idlearn.load(MODEL.value, checkpoint=checkpoint)


def image_paths(spec: str) -> tuple[str, list[str]]:
  """(root, sorted image paths) of a folder (recursive) or a glob."""
  from idlearn.inference import list_images

  if os.path.isdir(spec):
    return spec, list_images(spec)
  paths = sorted(
    p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)
  )
  if not paths:
    raise DataError(f"{spec}: neither a folder nor a glob matching files")
  return os.path.commonpath([os.path.dirname(p) for p in paths]), paths


def read(embedder, paths, *, what: str = "images"):
  """(uint8 [n, h, w, 3] at the input size, kept indices, failures).

  An image that does not decode is skipped and listed as (path, reason):
  one bad file never loses the rest.
  """
  arrays, kept, failed = [], [], []
  step = 256  # images per progress update
  starts = progress(range(0, len(paths), step), f"reading {what}", "256img")
  for start in starts:
    chunk = paths[start : start + step]
    for i, x in enumerate(embedder.prepare_many(chunk), start):
      if isinstance(x, Exception):
        failed.append((str(paths[i]), str(x)))
      else:
        arrays.append(x)
        kept.append(i)
  h, w = embedder.image_size
  stack = np.stack(arrays) if arrays else np.zeros((0, h, w, 3), np.uint8)
  return stack, np.asarray(kept, np.int64), failed


def embed(embedder, images: np.ndarray) -> np.ndarray:
  """Unit features of prepared images, batch by batch with progress."""
  bs, out = BATCH_SIZE.value, []
  starts = range(0, len(images), bs)
  for i in progress(starts, "embedding", unit="batch"):
    out.append(embedder.embed_prepared(images[i : i + bs], batch_size=bs))
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def progress(items, desc: str, unit: str = "img"):
  """A tqdm bar on a terminal; the plain iterable otherwise."""
  if not sys.stderr.isatty():
    return items
  from tqdm import tqdm

  return tqdm(items, desc=desc, unit=unit)


def report_failures(failed) -> None:
  for path, why in failed:
    print(f"skipped {path}: {why}", file=sys.stderr)
  if failed:
    print(f"{len(failed)} file(s) skipped", file=sys.stderr)

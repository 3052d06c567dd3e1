r"""How far colour alone goes on PKU-Reid's held-out ids (a diagnostic).

Retrieval with hand-made colour features, no learning, on the 12 held-out
PKU-Reid identities (Market-1501 protocol, as the trained models): a
joint RGB histogram (8 bins per channel, square-rooted, cosine) of the
whole 128x64 image, of its centre strip (the middle half of the width,
where the person is), and of the centre strip cut into 6 horizontal
parts (head-to-feet stripes, concatenated). Each also after camera
centering. If whole-image colour retrieves at chance while the centre
stripes do not, colour identifies people here but the background, which
differs by camera, swamps it. Measured numbers: experiments/ssl_pku_reid/.

  python benchmarks/color_histogram_probe.py
"""

import numpy as np

from idlearn import data
from idlearn.evaluators import reid
from idlearn.training.eval import center_cameras

BINS = 8


def histogram(pixels: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] pixels -> square-rooted joint RGB histogram [BINS**3]."""
  q = (pixels.reshape(-1, 3).astype(np.int64) * BINS) // 256
  codes = (q[:, 0] * BINS + q[:, 1]) * BINS + q[:, 2]
  h = np.bincount(codes, minlength=BINS**3).astype(np.float64)
  return np.sqrt(h / h.sum())


def features(images: np.ndarray, region: str) -> np.ndarray:
  """[n, h, w, 3] uint8 -> [n, d] colour features of one region."""
  _, h, w, _ = images.shape
  centre = images[:, :, w // 4 : w - w // 4]
  if region == "whole":
    return np.stack([histogram(x) for x in images])
  if region == "centre":
    return np.stack([histogram(x) for x in centre])
  stripes = np.array_split(np.arange(h), 6)
  return np.stack(
    [np.concatenate([histogram(x[rows]) for rows in stripes]) for x in centre]
  )


def main() -> None:
  q, _ = data.reid_eval_sets("pku_reid", image_size=(128, 64))  # q is g
  print(f"{len(q['image'])} images of {len(set(q['id']))} ids; rank-1 / mAP %")
  print(f"{'region':<18} {'plain':>12} {'camnorm':>12}")
  for region in ("whole", "centre", "centre_6_stripes"):
    f = features(q["image"], region)
    plain = reid.evaluate(f, q["id"], q["cam"], f, q["id"], q["cam"])
    fc, _ = center_cameras(f, q["cam"], f, q["cam"], same=True)
    cent = reid.evaluate(fc, q["id"], q["cam"], fc, q["id"], q["cam"])
    cell = lambda r: f"{100 * r['rank1']:5.1f}/{100 * r['mAP']:5.1f}"
    print(f"{region:<18} {cell(plain):>12} {cell(cent):>12}")


if __name__ == "__main__":
  main()

"""NumPy helpers on feature matrices shared by evaluators, miners and the
train loop: unit rows, per-camera centring, tracklet pooling."""

from collections.abc import Mapping

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (zero rows stay zero); dtype kept."""
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norm, 1e-12)


def center_cameras(feats: np.ndarray, cams: np.ndarray) -> np.ndarray:
  """Unit features minus the mean unit feature of their camera.

  Test-time camera normalisation from camera ids alone (no identity
  labels): what a camera adds to every image it takes (background, light,
  colour cast) cancels. The result is not re-normalised; cosine retrieval
  and matching normalise it.

  Args:
    feats: [n, d] features.
    cams: [n] camera ids.
  Returns:
    float64 [n, d].
  """
  feats, cams = np.asarray(feats, np.float64), np.asarray(cams)
  if feats.ndim != 2 or cams.shape != (len(feats),):
    raise ValueError(
      f"feats must be [n, d] and cams [n], got {feats.shape}, {cams.shape}"
    )
  out = unit(feats)
  for c in np.unique(cams):
    rows = cams == c
    out[rows] -= out[rows].mean(0)
  return out


def pool_tracklets(
  feats: np.ndarray, split: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Frame features [n, d] -> (tracklet features [t, d], ids [t], cams [t]).

  Each tracklet's feature is the mean of its frames' L2-normalised
  features (MARS protocol: average pooling over the sequence).

  Args:
    feats: [n, d] frame features.
    split: "tracklet", "id", "cam" [n] of the frames.
  """
  track = np.asarray(split["tracklet"])
  uniq, inv = np.unique(track, return_inverse=True)
  pooled = np.zeros((len(uniq), feats.shape[1]), np.float64)
  np.add.at(pooled, inv, unit(feats))
  pooled /= np.bincount(inv)[:, None]
  first = np.zeros(len(uniq), np.int64)
  first[inv[::-1]] = np.arange(len(track))[::-1]  # a frame of each tracklet
  return pooled.astype(np.float32), split["id"][first], split["cam"][first]

"""CaCL's camera-driven curriculum: MMD between feature sets, the order of
the target's camera subsets, and the camera bias of pseudo labels.

Lee et al., "Camera-Driven Representation Learning for Unsupervised Domain
Adaptive Person Re-identification", ICCV 2023 (abstract): the target's
training images are split by camera, training starts from one subset and
adds the others in the order of a scheduler that ranks the subsets by the
maximum mean discrepancy (MMD) to the source, closest first. The kernel,
its bandwidth and the feature space are not in the abstract; ours
(assumptions): a mixture of Gaussian kernels whose bandwidths are the
median pairwise distance (median heuristic, Gretton et al., 2012) times
`SCALES`, one bandwidth shared by every subset (their MMDs then compare),
on L2-normalised features of the source-trained encoder.

Host-side NumPy in float64: a few thousand features, once per run.
"""

from collections.abc import Sequence

import numpy as np

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # bandwidths: median distance x these


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[n, m] squared Euclidean distances in float64 (>= 0)."""
  d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
  return np.maximum(d, 0.0)


def _as_2d(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or not len(x):
    raise ValueError(f"{name} must be a non-empty [n, d] array, got {x.shape}")
  return x


def median_bandwidth(x: np.ndarray, y: np.ndarray | None = None) -> float:
  """The median heuristic: median Euclidean distance between distinct rows
  of x (stacked over y, if given); 1.0 when every row is the same."""
  pooled = _as_2d(x, "x") if y is None else np.concatenate(
    [_as_2d(x, "x"), _as_2d(y, "y")]
  )  # fmt: skip
  d = _sq_dists(pooled, pooled)[np.triu_indices(len(pooled), k=1)]
  med = float(np.sqrt(np.median(d))) if len(d) else 0.0
  return med if med > 0 else 1.0


def mmd2(
  x: np.ndarray,
  y: np.ndarray,
  *,
  bandwidth: float | None = None,
  scales: Sequence[float] = SCALES,
) -> float:
  """Squared MMD between two samples, biased (V-statistic) estimate.

    MMD^2 = mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j')
            - 2 mean_{i,j} k(x_i, y_j),
    k(a, b) = 1/M sum_m exp(-|a - b|^2 / (2 (s_m sigma)^2)),

  diagonal terms included, so it is >= 0 and exactly 0 for identical
  samples (the unbiased estimate is neither).

  Args:
    x: [n, d] and y: [m, d] features.
    bandwidth: sigma; None: `median_bandwidth(x, y)`.
    scales: s_1..s_M, the kernel widths relative to sigma.
  Returns:
    MMD^2 as a Python float.
  """
  x, y = _as_2d(x, "x"), _as_2d(y, "y")
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"x and y differ in width: {x.shape} vs {y.shape}")
  if not len(scales) or min(scales) <= 0:
    raise ValueError(f"scales must be positive, got {tuple(scales)}")
  sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
  if sigma <= 0:
    raise ValueError(f"bandwidth must be > 0, got {sigma}")
  gammas = [1.0 / (2.0 * (s * sigma) ** 2) for s in scales]

  def mean_kernel(a, b):
    d = _sq_dists(a, b)
    return float(np.mean([np.exp(-g * d).mean() for g in gammas]))

  return mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y)


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  if n <= 0 or len(x) <= n:
    return x
  return x[np.sort(rng.choice(len(x), n, replace=False))]


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def camera_order(
  source: np.ndarray,
  target: np.ndarray,
  cams: np.ndarray,
  *,
  scales: Sequence[float] = SCALES,
  max_images: int = 1000,
  seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """CaCL's camera-driven scheduler: target cameras by MMD to the source.

  Features are L2-normalised; each side is subsampled to `max_images`
  (seeded) and one bandwidth, the median heuristic of the subsampled
  source and target pooled, serves every camera.

  Args:
    source: [n_s, d] source features.
    target: [n_t, d] target features; cams: [n_t] their camera ids.
    scales: kernel widths relative to the bandwidth (see `mmd2`).
    max_images: at most this many images per side (<= 0: all).
    seed: the subsampling's seed.
  Returns:
    (camera ids int32 [c], their MMD^2 float64 [c]), ascending MMD (ties:
    the smaller camera id first): the curriculum order.
  """
  target = _unit(_as_2d(target, "target"))
  source = _unit(_as_2d(source, "source"))
  cams = np.asarray(cams)
  if cams.shape != (len(target),):
    raise ValueError(f"cams must be [{len(target)}], got {cams.shape}")
  rng = np.random.default_rng(seed)
  src = _subsample(source, max_images, rng)
  sigma = median_bandwidth(src, _subsample(target, max_images, rng))
  ids = np.unique(cams)
  dist = np.array(
    [
      mmd2(
        src,
        _subsample(target[cams == c], max_images, rng),
        bandwidth=sigma,
        scales=scales,
      )
      for c in ids
    ]
  )
  order = np.argsort(dist, kind="stable")
  return ids[order].astype(np.int32), dist[order]


def stage_cameras(order: np.ndarray, stage: int) -> np.ndarray:
  """The cameras of curriculum stage `stage` (0-based): the first
  min(stage + 1, c) of `order`; none before stage 0."""
  return np.asarray(order)[: max(0, stage + 1)]


def camera_bias(labels: np.ndarray, cams: np.ndarray) -> tuple[float, int]:
  """Camera bias of pseudo labels: the fraction of clusters (labels >= 0)
  whose members all come from one camera.

  Args:
    labels: [n] pseudo labels, -1 for unused images.
    cams: [n] camera ids.
  Returns:
    (fraction in [0, 1], 0.0 without clusters; the number of clusters).
  """
  labels, cams = np.asarray(labels), np.asarray(cams)
  if labels.shape != cams.shape or labels.ndim != 1:
    raise ValueError(f"labels {labels.shape} and cams {cams.shape} must be [n]")
  used = labels >= 0
  pairs = np.unique(np.stack([labels[used], cams[used]], 1), axis=0)
  clusters, n_cams = np.unique(pairs[:, 0], return_counts=True)
  if not len(clusters):
    return 0.0, 0
  return float(np.mean(n_cams == 1)), len(clusters)

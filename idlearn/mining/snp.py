"""SnP training-set search: which pool identities to train on for a target.

Yao et al., "Large-scale Training Data Search for Object Re-identification"
(CVPR 2023), as run by the official `feat_stas/SnP.py::training_set_search`
(github.com/yorkeyao/SnP at 5f48131). Given a labelled source pool and the
unlabelled images of a target domain, all as image features:

1. each pool identity is its mean image feature;
2. the identities fall into K equal-size clusters (balanced k-means; the
   official code uses `KMeansConstrained`, size_min = size_max = m / K);
3. each cluster's images get a Frechet distance (FD) to the target's;
4. Search: clusters are added in ascending FD order; after each, the FD of
   the union's images to the target is measured with the larger side
   randomly subsampled to the smaller's image count; the prefix with the
   lowest union FD is the searched set;
5. Prune: if it has more identities than the budget, that many are sampled
   uniformly at random from it.
`random` (uniform identities from the whole pool) is the baseline at the
same budget; `all` is the whole pool.

Differences from the official code (assumptions marked):
- balanced k-means here is Lloyd's algorithm whose assignment step is the
  exact capacity-constrained assignment (Hungarian, up to 2,048 identities)
  or a greedy one (nearest pairs first) above that; cluster sizes differ by
  at most one when K does not divide m (the official sizes must divide).
- step 4 compares the two subsamples' statistics; the official code draws
  the subsampled target but then compares against the full target's
  statistics (an apparent slip; assumption: the subsample was meant).
- `fill=True` (not in the official code, which then returns fewer
  identities) completes a searched set smaller than the budget with the next
  clusters in FD order (the last one subsampled), so that arms compare at
  equal budgets.
- the image-level budget (farthest-point sampling of images) and the
  unused per-cluster diversity score are not implemented.
Host-side NumPy in float64; the features come from any encoder (see
`idlearn.mining.selection`).
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

METHODS = ("snp", "random", "all")
# Identities up to which balanced k-means assigns exactly (an [m, m] cost
# matrix: 32 MiB at 2,048); above, greedily.
EXACT_ASSIGN_MAX = 2048


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of features, as FID computes them.

  Args:
    features: [n, d], n >= 2.
  Returns:
    (mu float64 [d], cov float64 [d, d]; unbiased, ddof=1).
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or len(x) < 2:
    raise ValueError(f"features must be [n >= 2, d], got shape {x.shape}")
  return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
  """Symmetric square root of a covariance (negative eigenvalues -> 0)."""
  w, v = np.linalg.eigh((cov + cov.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _fd(mu1, root1, cov1, mu2, cov2) -> float:
  # Tr((S1 S2)^1/2) = Tr((R S2 R)^1/2) with R = S1^1/2: R S2 R is symmetric
  # PSD, so its root's trace is the sum of sqrt of its eigenvalues (eigh),
  # no general (complex) sqrtm of the non-symmetric S1 S2.
  m = root1 @ cov2 @ root1
  w = np.linalg.eigvalsh((m + m.T) / 2)
  tr_root = np.sqrt(np.clip(w, 0, None)).sum()
  diff = mu1 - mu2
  fd = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_root
  return float(max(fd, 0.0))  # >= 0 exactly; rounding can dip below


def frechet_distance(
  mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
) -> float:
  """FD of N(mu1, cov1) and N(mu2, cov2) (the FID formula).

  FD = |mu1 - mu2|^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^1/2), with the trace
  of the root computed through `eigh` of cov1^1/2 cov2 cov1^1/2 (stable for
  singular covariances, e.g. fewer images than dimensions).

  Args:
    mu1, mu2: [d] means.
    cov1, cov2: [d, d] covariances (symmetric PSD).
  Returns:
    FD >= 0 (rounding below 0 clipped to 0).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  d = mu1.shape[0]
  if {mu1.shape, mu2.shape} != {(d,)} or {cov1.shape, cov2.shape} != {(d, d)}:
    raise ValueError(
      f"expected mu [d] and cov [d, d] of one d, got {mu1.shape}, "
      f"{cov1.shape}, {mu2.shape}, {cov2.shape}"
    )
  return _fd(mu1, _psd_sqrt(cov1), cov1, mu2, cov2)


def features_fd(a: np.ndarray, b: np.ndarray) -> float:
  """FD between the Gaussian statistics of features a [n, d] and b [m, d]."""
  return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
  """[m, k] squared distances of x [m, d] to c [k, d] (no [m, k, d])."""
  d2 = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]
  return np.maximum(d2, 0)


def _balanced_assign(dist: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """Labels [m] minimising sum dist[i, label_i] with exactly sizes[c]
  points in cluster c: exact (Hungarian on the centres repeated sizes[c]
  times) up to EXACT_ASSIGN_MAX points; above, greedy (nearest pairs
  first), which is not always optimal.

  Args:
    dist: [m, k] point-to-centre costs.
    sizes: [k] capacities summing to m.
  """
  m, k = dist.shape
  slots = np.repeat(np.arange(k), sizes)  # [m]: one column per place
  if m <= EXACT_ASSIGN_MAX:
    rows, cols = linear_sum_assignment(dist[:, slots])
    labels = np.empty(m, np.int64)
    labels[rows] = slots[cols]
    return labels
  labels, room, left = np.full(m, -1, np.int64), sizes.copy(), m
  for flat in np.argsort(dist, axis=None, kind="stable"):
    i, c = divmod(int(flat), k)
    if labels[i] < 0 and room[c] > 0:
      labels[i], room[c], left = c, room[c] - 1, left - 1
      if not left:
        break
  return labels


def balanced_kmeans(
  x: np.ndarray, k: int, *, seed: int = 0, max_iters: int = 100
) -> np.ndarray:
  """k-means with equal cluster sizes (sizes differ by one at most).

  k-means++ initialisation, then Lloyd iterations whose assignment step
  is capacity-constrained (`_balanced_assign` on squared Euclidean
  distances), until the labels stop changing.

  Args:
    x: [m, d] points (identity mean features).
    k: clusters, 1 <= k <= m; the first m % k clusters hold one more point.
    seed: initialisation seed.
    max_iters: Lloyd iterations at most.
  Returns:
    int64 [m] cluster labels in [0, k).
  """
  x = np.asarray(x, np.float64)
  m = len(x)
  if x.ndim != 2 or not 1 <= k <= m:
    raise ValueError(f"need x [m, d] and 1 <= k <= m, got {x.shape}, k={k}")
  sizes = np.full(k, m // k) + (np.arange(k) < m % k)
  rng = np.random.default_rng(seed)
  centres = x[rng.integers(m)][None]
  for _ in range(1, k):  # k-means++: far points are likelier centres
    d2 = _sq_dist(x, centres).min(1)
    p = d2 / d2.sum() if d2.sum() > 0 else np.full(m, 1 / m)
    centres = np.concatenate([centres, x[rng.choice(m, p=p)][None]])
  labels = None
  for _ in range(max_iters):
    new = _balanced_assign(_sq_dist(x, centres), sizes)
    if labels is not None and np.array_equal(new, labels):
      break
    labels = new
    centres = np.stack([x[labels == c].mean(0) for c in range(k)])
  return labels


@dataclasses.dataclass(frozen=True)
class Selection:
  """Which pool identities to train on, and why.

  Attributes:
    method: "snp", "random" or "all".
    chosen: int [n] identity indices (into the pool's identity list),
      sorted: the training set.
    budget: the identity budget asked for (0: none).
    names: [m] identity names ("dataset/identity") for the report.
    cluster_of: int [m] cluster of each identity (snp; else empty).
    cluster_fd: float [K] FD of each cluster's images to the target.
    order: int [K] clusters in ascending FD (the search order).
    prefix_fd: float [K] union FD after adding each cluster of `order`.
    prefix: int [j] clusters of the searched set (lowest union FD).
    searched: int identity indices of the searched set (before pruning).
    union_fd: the searched set's union FD (equal image counts).
    chosen_fd: FD of all images of `chosen` to all target images.
    images: images of the chosen identities.
    seed: the seed of the random draws.
  """

  method: str
  chosen: np.ndarray
  budget: int
  names: tuple[str, ...]
  cluster_of: np.ndarray
  cluster_fd: np.ndarray
  order: np.ndarray
  prefix_fd: np.ndarray
  prefix: np.ndarray
  searched: np.ndarray
  union_fd: float
  chosen_fd: float
  images: int
  seed: int

  def report(self) -> str:
    """A human-readable account: the clusters, the search, the choice."""
    lines = [f"selection {self.method} (seed {self.seed})"]
    if self.method == "snp":
      k = len(self.cluster_fd)
      lines.append(f"{k} clusters of identities, by FD to the target:")
      in_prefix = set(self.prefix.tolist())
      for rank, c in enumerate(self.order):
        ids = np.flatnonzero(self.cluster_of == c)
        mark = "*" if c in in_prefix else " "
        lines.append(
          f" {mark} cluster {c:3d}: FD {self.cluster_fd[c]:10.4f}  union FD "
          f"{self.prefix_fd[rank]:10.4f}  {len(ids):4d} ids "
          f"({_by_dataset(self.names, ids)})"
        )
      lines.append(
        f"searched set: the first {len(self.prefix)} clusters (*), "
        f"{len(self.searched)} ids, union FD {self.union_fd:.4f}"
      )
      n, m = len(self.chosen), len(self.searched)
      if n > m:
        lines.append(f"filled: +{n - m} ids of the next clusters by FD")
      elif n < m:
        lines.append(f"pruned: {n} of its {m} ids drawn uniformly")
    budget = f"budget {self.budget}" if self.budget else "no budget"
    lines.append(
      f"chosen: {len(self.chosen)} of {len(self.names)} ids ({budget}), "
      f"{self.images} images, FD to the target {self.chosen_fd:.4f}"
    )
    lines.append(f"  by dataset: {_by_dataset(self.names, self.chosen)}")
    return "\n".join(lines)

  __str__ = report


def _by_dataset(names: Sequence[str], ids: np.ndarray) -> str:
  counts: dict[str, int] = {}
  for i in ids:
    ds = names[i].split("/", 1)[0]
    counts[ds] = counts.get(ds, 0) + 1
  return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _owner_index(owner: np.ndarray, n: int) -> tuple[np.ndarray, int]:
  owner = np.asarray(owner)
  bad = owner.shape != (n,) or owner.dtype.kind not in "iu"
  if bad or (n and owner.min() < 0):
    raise ValueError(
      f"owner must be [n={n}] non-negative ints, got {owner.shape} "
      f"{owner.dtype}"
    )
  return owner, int(owner.max()) + 1 if n else 0


def _fd_equal_counts(a, b, rng) -> float:
  """FD with the larger of a [n, d], b [m, d] subsampled to the other's n."""
  n = min(len(a), len(b))
  if len(a) > n:
    a = a[np.sort(rng.choice(len(a), n, replace=False))]
  if len(b) > n:
    b = b[np.sort(rng.choice(len(b), n, replace=False))]
  return features_fd(a, b)


def select(
  method: str,
  feats: np.ndarray,
  owner: np.ndarray,
  target: np.ndarray,
  *,
  budget: int = 0,
  clusters: int = 50,
  seed: int = 0,
  fill: bool = False,
  names: Sequence[str] | None = None,
) -> Selection:
  """Identities of a pool to train on for a target (see the module doc).

  Args:
    method: "snp" (search and prune), "random" (`budget` identities drawn
      uniformly from the pool) or "all" (the whole pool).
    feats: [n, d] features of the pool's images.
    owner: int [n] identity index (0..m-1) of each image; every index in
      0..m-1 must own an image.
    target: [t, d] features of the target's images, t >= 2.
    budget: identities to keep (snp: prune to it; random: draw it);
      0 keeps the searched set (snp) and is an error for random.
    clusters: K of the balanced k-means (official default 50).
    seed: seed of k-means, the subsampling and the pruning.
    fill: snp: complete a searched set smaller than the budget with the
      next clusters in FD order (the last one subsampled), for equal
      budgets.
    names: [m] identity names ("dataset/identity") for the report.
  Returns:
    A `Selection`.
  """
  feats, target = np.asarray(feats, np.float64), np.asarray(target, np.float64)
  if feats.ndim != 2 or target.ndim != 2 or feats.shape[1] != target.shape[1]:
    raise ValueError(
      f"feats [n, d] and target [t, d] must share d, got {feats.shape}, "
      f"{target.shape}"
    )
  owner, m = _owner_index(owner, len(feats))
  if m == 0 or np.bincount(owner, minlength=m).min() == 0:
    raise ValueError("the pool is empty or an identity index owns no image")
  names = tuple(names) if names is not None else tuple(map(str, range(m)))
  if len(names) != m:
    raise ValueError(f"names has {len(names)} entries for {m} identities")
  if method not in METHODS:
    raise ValueError(f"method={method!r}: expected one of {METHODS}")
  if budget < 0 or budget > m or (method == "random" and budget == 0):
    raise ValueError(f"budget={budget}: expected 1..{m} (the pool's ids)")
  rng = np.random.default_rng(seed)
  empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
  search = dict(
    cluster_of=empty_i, cluster_fd=empty_f, order=empty_i,
    prefix_fd=empty_f, prefix=empty_i, searched=empty_i, union_fd=np.nan,
  )  # fmt: skip
  if method == "snp":
    search = _search(feats, owner, m, target, clusters, rng)
    chosen = search["searched"]
    if fill and budget > len(chosen):
      chosen = _fill(chosen, budget, search, rng)
    if budget and len(chosen) > budget:  # prune: uniform over identities
      chosen = rng.choice(chosen, budget, replace=False)
  elif method == "random":
    chosen = rng.choice(m, budget, replace=False)
  else:
    chosen = np.arange(m)
  chosen = np.sort(np.asarray(chosen, np.int64))
  mask = np.isin(owner, chosen)
  chosen_fd = features_fd(feats[mask], target) if mask.sum() > 1 else np.nan
  return Selection(
    method=method, chosen=chosen, budget=budget, names=names,
    chosen_fd=chosen_fd, images=int(mask.sum()), seed=seed, **search,
  )  # fmt: skip


def _fill(chosen, budget, search, rng) -> np.ndarray:
  """The searched set plus the next clusters in FD order up to `budget`
  identities, the last of them subsampled uniformly."""
  parts, need = [chosen], budget - len(chosen)
  for c in search["order"][len(search["prefix"]) :]:
    ids = np.flatnonzero(search["cluster_of"] == c)
    if len(ids) > need:
      ids = rng.choice(ids, need, replace=False)
    parts.append(ids)
    need -= len(ids)
    if need == 0:
      break
  return np.concatenate(parts)


def identity_means(feats: np.ndarray, owner: np.ndarray, m: int) -> np.ndarray:
  """[m, d] mean feature of each identity's images (owner: int [n])."""
  sums = np.zeros((m, feats.shape[1]))
  np.add.at(sums, owner, feats)
  return sums / np.bincount(owner, minlength=m)[:, None]


def _search(feats, owner, m, target, k, rng) -> dict:
  """Steps 1-4 of the module docstring."""
  if not 1 <= k <= m:
    raise ValueError(f"clusters={k}: expected 1..{m} (the pool's ids)")
  cluster_of = balanced_kmeans(
    identity_means(feats, owner, m), k, seed=int(rng.integers(2**31))
  )
  image_cluster = cluster_of[owner]  # [n]
  mu_t, cov_t = gaussian_stats(target)
  root_t = _psd_sqrt(cov_t)  # the target's root, shared by the K distances
  cluster_fd = np.full(k, np.inf)  # a one-image cluster has no covariance
  for c in range(k):
    x = feats[image_cluster == c]
    if len(x) > 1:
      cluster_fd[c] = _fd(mu_t, root_t, cov_t, *gaussian_stats(x))
  order = np.argsort(cluster_fd, kind="stable")
  prefix_fd, taken = np.full(k, np.inf), np.zeros(len(feats), bool)
  for j, c in enumerate(order):
    taken |= image_cluster == c
    if min(taken.sum(), len(target)) > 1:
      prefix_fd[j] = _fd_equal_counts(feats[taken], target, rng)
  best = int(np.argmin(prefix_fd))  # first of equal minima: the smaller set
  prefix = order[: best + 1]
  return dict(
    cluster_of=cluster_of, cluster_fd=cluster_fd, order=order,
    prefix_fd=prefix_fd, prefix=prefix, union_fd=float(prefix_fd[best]),
    searched=np.flatnonzero(np.isin(cluster_of, prefix)),
  )  # fmt: skip

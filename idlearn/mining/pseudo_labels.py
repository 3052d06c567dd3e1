"""DomainMix pseudo identities: Jaccard distance, DBSCAN, reliable clusters.

Wang et al., "DomainMix: Learning Generalizable Person Re-Identification
Without Human Annotations", BMVC 2021, Sec. 3.2, as run by the authors'
`train.py` (github.com/WangWenhao0716/DomainMix), which follows SpCL (Ge et
al., NeurIPS 2020, Sec. 3.3) for the reliability criteria:

1. k-reciprocal Jaccard distance between the unlabelled images' features
   (`idlearn.evaluators.reranking.jaccard_distance`, k1=30, k2=6);
2. DBSCAN on it (eps 0.6, min_samples 4), and again with eps -/+ 0.02
   (tight / loose); un-clustered images are singletons;
3. for image i with cluster I(i) (itself included), I_t(i), I_l(i):
   R_comp(i) = 1 - |I ∩ I_t| / |I ∪ I_t|,  R_indep(i) = 1 - |I ∩ I_l| /
   |I ∪ I_l|; each cluster's scores are the minima over its members;
4. a cluster is independent if its R_indep <= the 90th percentile of the
   multi-image clusters' R_indep (fixed at the first epoch, so it can be
   passed back in); image i keeps its label if its cluster is independent
   and R_comp(i) <= its cluster's R_comp, else it becomes a singleton;
5. clusters with fewer than 5 images are dropped (DomainMix's refinement),
   the rest relabelled 0..C-1.

Host-side NumPy (scikit-learn's DBSCAN): it runs once per epoch on the
features of the whole unlabelled set, outside the jitted step. The Jaccard
distance is kept sparse (only pairs within the loosest DBSCAN radius), and
the reliability scores are counted per label, so memory grows with the
stored pairs, not n^2 (MSMT17's 32k images: a dense float32 matrix alone is
4 GiB).
"""

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN


def dbscan(
  dist: np.ndarray | sp.spmatrix, *, eps: float = 0.6, min_samples: int = 4
) -> np.ndarray:
  """DBSCAN on precomputed [n, n] distances; -1 marks noise.

  `dist` is dense, or sparse (CSR) where a missing pair is not a
  neighbour: exact as long as every pair within eps is stored.
  """
  dist = _check_dist(dist)
  model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
  return model.fit_predict(dist).astype(np.int64)


def _check_dist(dist: Any) -> np.ndarray | sp.csr_matrix:
  if sp.issparse(dist):
    dist = sp.csr_matrix(dist, dtype=np.float64)
    values = dist.data
  else:
    dist = values = np.asarray(dist, np.float64)
  if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
    raise ValueError(f"dist must be a square [n, n] matrix, got {dist.shape}")
  if not np.isfinite(values).all() or (values < 0).any():
    raise ValueError("dist must hold finite, non-negative distances")
  return dist


def _singletons(labels: np.ndarray) -> np.ndarray:
  """Noise (-1) -> fresh labels after the clusters', one per image."""
  labels = labels.copy()
  noise = labels < 0
  labels[noise] = labels.max(initial=-1) + 1 + np.arange(noise.sum())
  return labels


def _group_size(x: np.ndarray) -> np.ndarray:
  """[n] -> [n]: how many entries share each entry's value."""
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  return counts[inverse]


def _iou_score(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
  """1 - IoU of each image's cluster under two labelings (>= 0): [n]."""
  both = labels.astype(np.int64) * (other.max() + 1) + other
  inter = _group_size(both)  # |I(i) ∩ I_o(i)|: same pair of labels as i
  return 1.0 - inter / (_group_size(labels) + _group_size(other) - inter)


def reliable_pseudo_labels(
  dist: np.ndarray | sp.spmatrix,
  *,
  eps: float = 0.6,
  eps_gap: float = 0.02,
  min_samples: int = 4,
  min_cluster_size: int = 5,
  indep_threshold: float | None = None,
  indep_quantile: float = 0.9,
) -> tuple[np.ndarray, dict[str, Any]]:
  """Reliable pseudo identities from a distance matrix (steps 2-5 above).

  Args:
    dist: [n, n] distances (e.g. Jaccard), symmetric, non-negative; dense,
      or sparse with every pair within eps + eps_gap stored (a missing
      pair is not a DBSCAN neighbour).
    eps: DBSCAN radius; eps -/+ eps_gap give the tight / loose clusterings.
    min_samples: DBSCAN's core-point neighbourhood size.
    min_cluster_size: clusters with fewer kept images are dropped.
    indep_threshold: R_indep threshold; None computes it from this
      clustering (the first epoch) and returns it in the info dict.
    indep_quantile: which order statistic sets the threshold.
  Returns:
    (labels [n] int64, -1 for dropped images and 0..C-1 otherwise; info
    dict with "num_clusters", "num_dropped", "indep_threshold",
    "num_dbscan_clusters").
  """
  dist = _check_dist(dist)
  raw = dbscan(dist, eps=eps, min_samples=min_samples)
  labels = _singletons(raw)
  tight = _singletons(dbscan(dist, eps=eps - eps_gap, min_samples=min_samples))
  loose = _singletons(dbscan(dist, eps=eps + eps_gap, min_samples=min_samples))
  r_comp = _iou_score(labels, tight)
  r_indep = _iou_score(labels, loose)
  ids, inverse, sizes = np.unique(
    labels, return_inverse=True, return_counts=True
  )
  # Per-cluster minima over members.
  c_comp = np.full(len(ids), np.inf)
  c_indep = np.full(len(ids), np.inf)
  np.minimum.at(c_comp, inverse, r_comp)
  np.minimum.at(c_indep, inverse, r_indep)
  if indep_threshold is None:
    multi = np.sort(c_indep[sizes > 1])
    if len(multi) == 0:
      indep_threshold = 0.0
    else:
      pos = min(len(multi) - 1, int(np.round(len(multi) * indep_quantile)))
      indep_threshold = float(multi[pos])
  keep = (c_indep[inverse] <= indep_threshold) & (r_comp <= c_comp[inverse])
  kept = np.where(keep, labels, -1)
  # Refinement: only clusters with enough kept images become identities.
  ids, counts = np.unique(kept[kept >= 0], return_counts=True)
  big = ids[counts >= min_cluster_size]
  out = np.full(len(labels), -1, np.int64)
  for new, old in enumerate(big):
    out[kept == old] = new
  info = {
    "num_clusters": len(big),
    "num_dropped": int(np.sum(out < 0)),
    "indep_threshold": indep_threshold,
    "num_dbscan_clusters": int(raw.max(initial=-1) + 1),
  }
  return out, info


def domainmix_pseudo_labels(
  features: np.ndarray,
  *,
  k1: int = 30,
  k2: int = 6,
  eps: float = 0.6,
  indep_threshold: float | None = None,
  sparse: bool = True,
  **kwargs: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
  """DomainMix's whole step 1-5: features -> reliable pseudo identities.

  Args:
    features: [n, d] features of the unlabelled images (L2-normalised
      inside the Jaccard distance).
    k1, k2: k-reciprocal and query-expansion sizes (DomainMix: 30, 6).
    eps: DBSCAN radius (DomainMix: 0.6).
    indep_threshold: pass the first epoch's value back in later epochs.
    sparse: keep only the Jaccard distances within the loosest DBSCAN
      radius (O(stored pairs) memory; same clusters as the dense [n, n]
      matrix, which sparse=False builds).
    **kwargs: forwarded to `reliable_pseudo_labels`.
  Returns:
    As `reliable_pseudo_labels`.
  """
  # Imported here: evaluators is a sibling subpackage, only this needs it.
  from idlearn.evaluators.reranking import jaccard_distance

  features = np.asarray(features)
  if features.ndim != 2:
    raise ValueError(f"features must be [n, d], got {features.shape}")
  radius = eps + abs(kwargs.get("eps_gap", 0.02))  # loose DBSCAN's eps
  dist = jaccard_distance(
    features, k1=k1, k2=k2, sparse=sparse, max_distance=radius
  )
  return reliable_pseudo_labels(
    dist, eps=eps, indep_threshold=indep_threshold, **kwargs
  )

"""Pseudo identities for an unlabelled domain, refreshed during training.

DomainMix (Wang et al., BMVC 2021) trains on a labelled source set and an
unlabelled target set: every `every_steps` the current model embeds the
whole target split, `idlearn.mining.pseudo_labels.domainmix_pseudo_labels`
clusters it (k-reciprocal Jaccard distance, DBSCAN, reliability filter),
and the next batches hold P x K source identities plus P x K of the new
pseudo identities. The labels, their centroids and the first clustering's
independence threshold live in the train state's extras, so a resumed run
rebuilds the same batches.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from idlearn.training import eval as eval_lib
from idlearn.training import fields
from idlearn.training import writer as writer_lib

FIELDS = {
  "name": fields.REQUIRED,  # the unlabelled target set (idlearn.data name)
  "split": "train",
  "data_dir": "",
  "manual_dir": "",
  "every_steps": fields.REQUIRED,  # re-cluster interval (DomainMix: 1 epoch)
  "target_fraction": 0.5,  # of the global batch drawn from the target
  "feature": "feat",  # model output that is clustered
  "batch_size": 64,  # feature extraction
  "k1": 30,
  "k2": 6,
  "eps": 0.6,
  "min_samples": 4,
  "min_cluster_size": 5,
}
TARGET_ID_OFFSET = 1_000_000  # target pseudo ids never collide with source ids


class Relabeler:
  """Clusters the target split and makes the two-domain loader.

  Args:
    cfg: resolved `config.pseudo_labels` fields (see `FIELDS`).
    model: the IdModel being trained.
    make_loader: (dataset fields dict, global_batch_size, seed, labels or
      None) -> a train loader (see `inputs.make_loader`).
    input_cfg: the resolved `config.input` of the source set.
    seed: the run's seed.
  """

  def __init__(self, cfg, model, make_loader, input_cfg, seed):
    self.cfg, self.model, self.seed = cfg, model, seed
    self.every_steps = cfg["every_steps"]
    if self.every_steps <= 0:
      raise ValueError("config.pseudo_labels.every_steps must be > 0")
    self._make_loader, self._input = make_loader, input_cfg
    batch = input_cfg["global_batch_size"]
    self.target_batch = int(round(batch * cfg["target_fraction"]))
    self.source_batch = batch - self.target_batch
    k = input_cfg["k"]
    if self.target_batch % k or self.source_batch % k or not self.target_batch:
      raise ValueError(
        f"config.pseudo_labels.target_fraction={cfg['target_fraction']} "
        f"splits the batch {batch} into {self.source_batch} source + "
        f"{self.target_batch} target rows; both must be positive multiples "
        f"of input.k={k}"
      )
    self._images = None

  def _target(self) -> dict:
    return {
      **self._input,
      "name": self.cfg["name"],
      "split": self.cfg["split"],
      "data_dir": self.cfg["data_dir"],
      "manual_dir": self.cfg["manual_dir"],
    }

  def images(self) -> np.ndarray:
    """uint8 [n, h, w, 3]: the whole target split, at the input size."""
    if self._images is None:
      from idlearn import data

      t = self._target()
      self._images = data.load_split(
        t["name"],
        t["split"],
        image_size=tuple(t["image_size"]),
        data_dir=t["data_dir"] or None,
        manual_dir=t["manual_dir"] or None,
      )["image"]
    return self._images

  def sample(self) -> np.ndarray:
    """One input image (uint8 [1, h, w, 3]) of the training shape."""
    return np.zeros((1, *self._input["image_size"], 3), np.uint8)

  def max_clusters(self) -> int:
    return max(1, len(self.images()) // self.cfg["min_cluster_size"])

  def init_extras(self, out_shapes: Mapping[str, Any]) -> dict:
    """Extras before the first clustering (no pseudo identity yet)."""
    d = out_shapes[self.cfg["feature"]].shape[-1]
    return {
      "pseudo": jnp.full((len(self.images()),), -1, jnp.int32),
      "centroids": jnp.zeros((self.max_clusters(), d), jnp.float32),
      "num_clusters": jnp.zeros((), jnp.int32),
      "indep_threshold": jnp.full((), -1.0, jnp.float32),
    }

  def refresh(self, state: Any, mesh: Any) -> tuple[Any, dict]:
    """Re-clusters the target split with `state`'s model.

    Returns:
      (state with new extras, {"pseudo/num_clusters", "pseudo/num_dropped"}).
    """
    from idlearn.mining import pseudo_labels

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    feats = eval_lib.extract(
      self.model,
      variables,
      self.images(),
      size=tuple(self._input["image_size"]),
      feature=self.cfg["feature"],
      batch_size=self.cfg["batch_size"],
      mesh=mesh,
    )
    extras = jax.tree.map(np.asarray, jax.device_get(state.extras))
    threshold = float(extras["indep_threshold"])
    labels, info = pseudo_labels.domainmix_pseudo_labels(
      feats,
      k1=self.cfg["k1"],
      k2=self.cfg["k2"],
      eps=self.cfg["eps"],
      min_samples=self.cfg["min_samples"],
      min_cluster_size=self.cfg["min_cluster_size"],
      indep_threshold=None if threshold < 0 else threshold,
    )
    c = info["num_clusters"]  # <= n // min_cluster_size = max_clusters
    norm = np.linalg.norm(feats, axis=1, keepdims=True)
    unit = feats / np.maximum(norm, 1e-12)
    centroids = np.zeros_like(extras["centroids"])
    for j in range(c):
      m = unit[labels == j].mean(0)
      centroids[j] = m / max(np.linalg.norm(m), 1e-12)
    new = {
      **extras,
      "pseudo": labels.astype(np.int32),
      "centroids": centroids.astype(np.float32),
      "num_clusters": np.int32(c),
      "indep_threshold": np.float32(info["indep_threshold"]),
    }
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = state.replace(extras=jax.device_put(new, rep))
    writer_lib.say(
      f"pseudo labels: {c} identities, {info['num_dropped']} of "
      f"{len(labels)} target images unused"
    )
    return state, {
      "pseudo/num_clusters": float(c),
      "pseudo/num_dropped": float(info["num_dropped"]),
    }

  def loader(self, extras: Any, step: int) -> "TwoDomainLoader":
    """The batches that follow the clustering done at `step`."""
    labels = np.asarray(jax.device_get(extras["pseudo"]))
    if int(np.max(labels, initial=-1)) < 0:
      raise ValueError(
        "no reliable pseudo identity in the target split "
        f"{self.cfg['name']}/{self.cfg['split']}: DBSCAN (eps "
        f"{self.cfg['eps']}) found no cluster of >= "
        f"{self.cfg['min_cluster_size']} images; raise eps"
      )
    k = self._input["k"]
    n_ids = len(np.unique(labels[labels >= 0]))
    if n_ids * k < self.target_batch:
      raise ValueError(
        f"{n_ids} pseudo identities cannot fill the "
        f"{self.target_batch // k} target identities of a batch; lower "
        "config.pseudo_labels.target_fraction or raise eps"
      )
    source = self._make_loader(self._input, self.source_batch, self.seed, None)
    target = self._make_loader(
      self._target(), self.target_batch, self.seed + 7919 * (step + 1), labels
    )
    return TwoDomainLoader(source, target)


class TwoDomainLoader:
  """Zips a source and a target loader into one batch per step.

  Rows: the source batch, then the target batch; "domain" 0 / 1; target
  "id" offset by `TARGET_ID_OFFSET` (pseudo ids disjoint from source ids),
  target "label" the pseudo identity (0..C-1).
  """

  def __init__(self, source, target):
    self.source, self.target = source, target

  def __iter__(self):
    return _TwoDomainIterator(iter(self.source), iter(self.target))


_KEYS = ("image", "id", "label", "cam", "index")


class _TwoDomainIterator:
  def __init__(self, source, target):
    self.source, self.target = source, target

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    s, t = next(self.source), next(self.target)
    t = {**t, "id": t["id"] + TARGET_ID_OFFSET}
    out = {k: np.concatenate([s[k], t[k]]) for k in _KEYS}
    out["domain"] = np.concatenate(
      [np.zeros(len(s["id"]), np.int32), np.ones(len(t["id"]), np.int32)]
    )
    return out

  def get_state(self) -> dict:
    return {
      "source": self.source.get_state(),
      "target": self.target.get_state(),
    }

  def set_state(self, state: dict) -> None:
    self.source.set_state(state["source"])
    self.target.set_state(state["target"])

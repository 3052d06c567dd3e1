"""DomainMix: labelled source identities + pseudo identities of an
unlabelled target domain, with the adversarial domain-balance loss.

Wang et al., "DomainMix: Learning Generalizable Person Re-Identification
Without Human Annotations", BMVC 2021. Every `every_steps` the "target_clusters"
miner embeds the whole target split with the current model and clusters
it (`mining.pseudo_labels.domainmix_pseudo_labels`: k-reciprocal Jaccard
distance, DBSCAN, reliability filter); the following batches hold P x K
source identities (domain 0, their labels) and P x K of the new pseudo
identities (domain 1). Terms of the objective:

  ce_src  label-smoothed identity CE of source rows (BNNeck classifier);
  ce_tgt  CE of target rows over the pseudo identities' centroids
          (cosine / memory_temp); the centroids start from each
          re-clustering and follow the batch features with momentum;
  triplet batch-hard over all rows (source and pseudo ids kept disjoint);
  disc    the domain discriminator's CE on stop-gradient features
          (`losses.domain_classification`: trains the discriminator only);
  bal     `losses.domain_balance` of the discriminator on the features,
          its parameters frozen (trains the encoder to make the domains
          indistinguishable).

State: the miner owns the pseudo labels and each clustering's centroids
(`ctx.mined`, with a `generation` count); this method owns its centroid
memory and the generation it started from, and restarts the memory from
the miner's centroids when a new clustering arrives.

Assumption: DomainMix re-initialises a parametric classifier for the new
pseudo identities at every re-clustering; here they are classified by
their centroid memory instead (fixed shapes, no optimizer-state surgery).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from idlearn import fields, losses, sharding
from idlearn.errors import ConfigError
from idlearn.evaluators.features import unit
from idlearn.methods import base
from idlearn.methods.supervised import ClassifierNet

TARGET_ID_OFFSET = 1_000_000  # target pseudo ids never collide with source


def centroid_logits(feat, centroids, num_clusters, temp):
  """Cosine similarity to each active centroid / temp: [b, C_max]."""
  logits = losses.l2_normalize(feat) @ losses.l2_normalize(centroids).T / temp
  active = jnp.arange(centroids.shape[0]) < num_clusters
  return jnp.where(active[None, :], logits, -1e9)


class DomainMix(base.Method):
  NAMES = ("domainmix",)
  MINERS = ("target_clusters",)
  NEEDS_MINER = True
  FIELDS = {
    "margin": 0.3,
    "label_smoothing": 0.1,
    "triplet_weight": 1.0,
    "ce_weight": 1.0,  # source and target CE
    "disc_weight": 1.0,
    "balance_weight": 1.0,
    "memory_temp": 0.05,
    "memory_momentum": 0.2,
    "num_classes": 0,  # source classifier width; 0: the source split's ids
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    self.num_classes = cfg["num_classes"] or setup.num_classes()
    self._triplet = sharding.shard_loss(
      losses.triplet, setup.mesh, margin=cfg["margin"], mining="batch_hard"
    )

  @property
  def neck(self) -> str:
    return "bnneck"

  def network(self) -> nn.Module:
    return ClassifierNet(
      encoder=self.setup.make_encoder(),
      neck="bnneck",
      num_classes=self.num_classes,
      domain_classes=2,
      dtype=self.setup.dtype,
    )

  def init_extras(self, out_shapes):
    return memory_init(self.miner.max_clusters(), out_shapes)

  def loss(self, net, views, batch, ctx):
    cfg, mined = self.cfg, ctx.mined
    out = net(base.first(views, "image"))
    domain = batch["domain"]
    (ce_src, ce_tgt, tri, tri_aux), extras = pseudo_label_terms(
      self, out, batch, ctx
    )
    disc, disc_aux = losses.domain_classification(out["domain_logits"], domain)
    bal, bal_aux = losses.domain_balance(out["domain_logits_adv"])
    total = (
      cfg["ce_weight"] * (ce_src + ce_tgt)
      + cfg["triplet_weight"] * tri
      + cfg["disc_weight"] * disc
      + cfg["balance_weight"] * bal
    )
    aux = {
      "ce_src": ce_src,
      "ce_tgt": ce_tgt,
      "triplet": tri,
      "disc": disc,
      "balance": bal,
      "disc_acc": disc_aux["accuracy"],
      "domain_entropy": bal_aux["domain_entropy"],
      "frac_active": tri_aux.get("frac_active", jnp.float32(0)),
      "num_clusters": mined["num_clusters"].astype(jnp.float32),
    }
    return total, aux, extras


def memory_init(max_clusters: int, out_shapes) -> dict:
  """The target's centroid memory before the first clustering:
  "centroids" float32 [max_clusters, d] (d: the "eval" width) and the
  clustering "generation" it follows (int32 [])."""
  d = out_shapes["eval"].shape[-1]
  return {
    "centroids": jnp.zeros((max_clusters, d), jnp.float32),
    "generation": jnp.zeros((), jnp.int32),
  }


def pseudo_label_terms(method, out, batch, ctx):
  """The terms DomainMix and CaCL share, on one two-domain batch.

  Source rows ("domain" 0): label-smoothed identity CE on the classifier;
  target rows (1): CE of their pseudo "label" against the centroid memory
  (restarted from the miner's centroids after each clustering); every row:
  the batch-hard triplet on "emb" with "id".

  Args:
    method: the method (its cfg: label_smoothing, memory_temp,
      memory_momentum; its `_triplet`).
    out: the network's outputs ("logits", "feat", "emb").
    batch: "domain", "label", "id" [b].
    ctx: the step's `Context` (memory in extras, clustering in mined).
  Returns:
    ((ce_src, ce_tgt, triplet, triplet aux), the memory's new extras).
  """
  cfg, mined = method.cfg, ctx.mined
  src, tgt = batch["domain"] == 0, batch["domain"] == 1
  label = batch["label"]
  ce_src, _ = losses.identity_ce(
    out["logits"], jnp.where(src, label, 0),
    label_smoothing=cfg["label_smoothing"], mask=src,
  )  # fmt: skip
  # a new clustering restarts the memory from its centroids
  fresh = mined["generation"] != ctx.extras["generation"]
  centroids = jnp.where(fresh, mined["centroids"], ctx.extras["centroids"])
  t_logits = centroid_logits(
    out["feat"], centroids, mined["num_clusters"], cfg["memory_temp"]
  )
  ce_tgt, _ = losses.identity_ce(
    t_logits, jnp.where(tgt, label, 0), label_smoothing=0.0, mask=tgt
  )
  tri, tri_aux = method._triplet(out["emb"], batch["id"])
  extras = {
    "centroids": follow_centroids(
      centroids, out["feat"], batch, cfg["memory_momentum"]
    ),
    "generation": mined["generation"],
  }
  return (ce_src, ce_tgt, tri, tri_aux), extras


def follow_centroids(centroids, feat, batch, momentum):
  """Momentum update of the centroids [C, d] of the batch's pseudo
  identities (target rows: "domain" 1, their "label"); feat [b, d]."""
  feat = losses.l2_normalize(jax.lax.stop_gradient(feat))
  tgt = batch["domain"] == 1
  label = jnp.where(tgt, batch["label"], 0)
  onehot = jax.nn.one_hot(label, centroids.shape[0]) * tgt[:, None]  # [b, C]
  count = onehot.sum(0)  # [C]
  mean = (onehot.T @ feat) / jnp.maximum(count, 1.0)[:, None]
  m = momentum
  moved = losses.l2_normalize(m * centroids + (1.0 - m) * mean)
  return jnp.where((count > 0)[:, None], moved, centroids)


class TargetClusterMiner(base.Miner):
  """Clusters the unlabelled target split into reliable pseudo identities
  and makes the two-domain loader."""

  NAME = "target_clusters"
  FIELDS = {
    "data": fields.REQUIRED,  # the unlabelled target set (idlearn.data name)
    "split": "train",
    "data_dir": "",
    "manual_dir": "",
    "every_steps": fields.REQUIRED,  # re-cluster interval (DomainMix: 1 epoch)
    "target_fraction": 0.5,  # of the global batch drawn from the target
    "feature": "eval",  # eval | emb: the feature that is clustered
    "batch_size": 64,  # feature extraction
    "k1": 30,
    "k2": 6,
    "eps": 0.6,
    "min_samples": 4,
    "min_cluster_size": 5,
  }

  def __init__(self, cfg, setup):
    super().__init__(cfg, setup)
    batch, k = setup.input["global_batch_size"], setup.input["k"]
    self.target_batch = int(round(batch * cfg["target_fraction"]))
    self.source_batch = batch - self.target_batch
    if self.target_batch % k or self.source_batch % k or not self.target_batch:
      raise ConfigError(
        f"config.miner.target_fraction={cfg['target_fraction']} splits the "
        f"batch {batch} into {self.source_batch} source + "
        f"{self.target_batch} target rows; both must be positive multiples "
        f"of config.input.k={k}"
      )
    self._loaded = None

  def _target(self) -> dict:
    t = {k: self.cfg[k] for k in ("split", "data_dir", "manual_dir")}
    return {**self.setup.input, "name": self.cfg["data"], **t}

  def _split(self) -> dict:
    """The whole target split (`data.load_split`), at the input size."""
    if self._loaded is None:
      from idlearn import data

      t = self._target()
      self._loaded = data.load_split(
        t["name"],
        t["split"],
        image_size=tuple(t["image_size"]),
        data_dir=t["data_dir"] or None,
        manual_dir=t["manual_dir"] or None,
      )
    return self._loaded

  def images(self) -> np.ndarray:
    """uint8 [n, h, w, 3]: the whole target split, at the input size."""
    return self._split()["image"]

  def cams(self) -> np.ndarray:
    """int32 [n]: the target images' camera ids."""
    return self._split()["cam"]

  def sample(self) -> np.ndarray:
    return np.zeros((1, *self.setup.input["image_size"], 3), np.uint8)

  def max_clusters(self) -> int:
    return max(1, len(self.images()) // self.cfg["min_cluster_size"])

  def init_state(self, feature_dims):
    d = feature_dims[self.cfg["feature"]]
    return {
      "pseudo": np.full((len(self.images()),), -1, np.int32),
      "centroids": np.zeros((self.max_clusters(), d), np.float32),
      "num_clusters": np.zeros((), np.int32),
      "indep_threshold": np.full((), -1.0, np.float32),
      "generation": np.zeros((), np.int32),
    }

  def refresh(self, features, state):
    feats = features(self.images(), batch_size=self.cfg["batch_size"])
    threshold = float(state["indep_threshold"])
    new, info = self.cluster(feats[self.cfg["feature"]], threshold, state)
    new["generation"] = np.int32(state["generation"] + 1)
    c, n = int(new["num_clusters"]), len(new["pseudo"])
    report = {
      "pseudo/num_clusters": float(c),
      "pseudo/num_dropped": float(info["num_dropped"]),
    }
    message = (
      f"pseudo labels: {c} identities, {info['num_dropped']} of "
      f"{n} target images unused"
    )
    return new, report, message

  def cluster(self, feats, threshold, state, include=None):
    """Reliable pseudo identities of (some of) the target images.

    Args:
      feats: [m, d] features of the clustered images.
      threshold: R_indep threshold (< 0: computed from this clustering).
      state: the miner state (for the shapes).
      include: bool [n]: the target images `feats` are of (None: all).
    Returns:
      ({"pseudo" int32 [n] (-1: unused or not included), "centroids",
      "num_clusters", "indep_threshold"}, the clustering's info dict).
    """
    from idlearn.mining import pseudo_labels

    cfg = self.cfg
    labels, info = pseudo_labels.domainmix_pseudo_labels(
      feats,
      k1=cfg["k1"],
      k2=cfg["k2"],
      eps=cfg["eps"],
      min_samples=cfg["min_samples"],
      min_cluster_size=cfg["min_cluster_size"],
      indep_threshold=None if threshold < 0 else threshold,
    )
    c = info["num_clusters"]  # <= n // min_cluster_size = max_clusters
    z = unit(feats)
    centroids = np.zeros_like(state["centroids"])
    for j in range(c):
      centroids[j] = unit(z[labels == j].mean(0))
    if include is not None:
      full = np.full(len(include), -1, labels.dtype)
      full[include] = labels
      labels = full
    new = {
      "pseudo": labels.astype(np.int32),
      "centroids": centroids.astype(np.float32),
      "num_clusters": np.int32(c),
      "indep_threshold": np.float32(info["indep_threshold"]),
    }
    return new, info

  def loader(self, state, step):
    labels = np.asarray(state["pseudo"])
    cfg, k = self.cfg, self.setup.input["k"]
    if int(np.max(labels, initial=-1)) < 0:
      raise ConfigError(
        f"no reliable pseudo identity in the target split {cfg['data']}/"
        f"{cfg['split']}: DBSCAN (eps {cfg['eps']}) found no cluster of >= "
        f"{cfg['min_cluster_size']} images; raise config.miner.eps"
      )
    n_ids = len(np.unique(labels[labels >= 0]))
    if n_ids * k < self.target_batch:
      raise ConfigError(
        f"{n_ids} pseudo identities cannot fill the "
        f"{self.target_batch // k} target identities of a batch; lower "
        "config.miner.target_fraction or raise config.miner.eps"
      )
    return self.two_domain_loader(labels, step, self.setup.seed)

  def two_domain_loader(self, labels, step, source_seed, **target_kw):
    """Source batches (P x K labelled ids) + target batches of the pseudo
    identities `labels` [n]; the target order is drawn from the step."""
    source = base.make_loader(
      self.setup.input, source_seed, global_batch_size=self.source_batch
    )
    target = base.make_loader(
      self._target(), self.setup.seed + 7919 * (step + 1),
      global_batch_size=self.target_batch, labels=labels, **target_kw,
    )  # fmt: skip
    return TwoDomainLoader(source, target)


class TwoDomainLoader:
  """Zips a source and a target loader into one batch per step.

  Rows: the source batch, then the target batch; "domain" 0 / 1; target
  "id" offset by `TARGET_ID_OFFSET` (pseudo ids disjoint from source ids),
  target "label" the pseudo identity (0..C-1). target=None: the source
  batches alone (every row "domain" 0), in the same layout of keys.
  """

  KEYS = ("image", "id", "label", "cam", "index")

  def __init__(self, source, target=None):
    self.source, self.target = source, target

  def __iter__(self):
    target = None if self.target is None else iter(self.target)
    return _TwoDomainIterator(iter(self.source), target)


class _TwoDomainIterator:
  def __init__(self, source, target):
    self.source, self.target = source, target

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    s = next(self.source)
    if self.target is None:
      out = {k: s[k] for k in TwoDomainLoader.KEYS}
      out["domain"] = np.zeros(len(s["id"]), np.int32)
      return out
    t = next(self.target)
    t = {**t, "id": t["id"] + TARGET_ID_OFFSET}
    out = {k: np.concatenate([s[k], t[k]]) for k in TwoDomainLoader.KEYS}
    out["domain"] = np.concatenate(
      [np.zeros(len(s["id"]), np.int32), np.ones(len(t["id"]), np.int32)]
    )
    return out

  def get_state(self) -> dict:
    if self.target is None:
      return {"source": self.source.get_state()}
    return {
      "source": self.source.get_state(),
      "target": self.target.get_state(),
    }

  def set_state(self, state: dict) -> None:
    self.source.set_state(state["source"])
    if self.target is not None:
      self.target.set_state(state["target"])


METHODS = (DomainMix,)
MINERS = (TargetClusterMiner,)

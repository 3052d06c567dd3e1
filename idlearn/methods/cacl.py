"""CaCL: a camera-driven curriculum over the unlabelled target domain and
the camera-diversity loss (UDA re-ID: labelled source, unlabelled target
with camera ids).

Lee et al., "Camera-Driven Representation Learning for Unsupervised Domain
Adaptive Person Re-identification", ICCV 2023 (arXiv 2308.11901). No
official code was found; from the abstract: the target's images are split
by camera; training starts with one camera subset and adds the others in
the order of a scheduler that ranks them by their MMD to the source
(closest first); each stage trains on pseudo labels of the included
images; the camera-diversity (CD) loss makes same-pseudo-label images of
*different* cameras count more, against the camera bias of clustering.

How it runs here (the "camera_curriculum" miner, every `every_steps`):
  warm-up  steps < source_steps: source batches only (the encoder learns
           the source; the order is not known yet);
  order    at the first mining after it: features of the current (source-
           trained) encoder on the source and target images ->
           `mining.curriculum.camera_order` (multi-bandwidth Gaussian MMD,
           median heuristic), kept for the rest of the run;
  stage k  from source_steps + k * stage_steps: the first k + 1 cameras of
           the order (the last stage lasts to the end); their images are
           re-clustered at each mining (DomainMix's clustering:
           k-reciprocal Jaccard, DBSCAN, reliability filter) and batches
           hold P x K source ids + P x K pseudo ids (`domainmix`'s
           two-domain loader; few pseudo ids repeat within a batch).
Objective: label-smoothed CE of source rows (BNNeck classifier), CE of
target rows over the pseudo identities' centroid memory (as `domainmix`),
batch-hard triplet over all rows, and `cd_weight` x `losses.camera_diversity`
on the target rows (source rows are negatives only). Logged per mining:
the stage, its cameras and image count, the clusters and the camera bias
of the pseudo labels (fraction of single-camera clusters).

Assumptions (ours, not the paper's): the source warm-up and its length,
the stage length, MMD's kernel, bandwidths and feature (L2-normalised
BNNeck feature), one order for the whole run, DomainMix's clustering and
centroid-memory CE for the pseudo labels, the R_indep threshold fixed at
each stage's first clustering, and the CD loss's form (see
`losses.camera_diversity`: cross-camera positives only) and weight.
"""

import jax.numpy as jnp
import numpy as np

from idlearn import fields, losses, sharding
from idlearn.errors import ConfigError
from idlearn.methods import base
from idlearn.methods.domainmix import (
  TargetClusterMiner,
  TwoDomainLoader,
  memory_init,
  pseudo_label_terms,
)
from idlearn.methods.supervised import ClassifierNet
from idlearn.mining import curriculum


class CaCL(base.Method):
  NAMES = ("cacl",)
  MINERS = ("camera_curriculum",)
  NEEDS_MINER = True
  FIELDS = {
    "margin": 0.3,
    "label_smoothing": 0.1,
    "triplet_weight": 1.0,
    "ce_weight": 1.0,  # source and target CE
    "cd_weight": 1.0,  # camera diversity; 0 ablates it
    "cd_temperature": 0.1,
    "memory_temp": 0.05,
    "memory_momentum": 0.2,
    "num_classes": 0,  # source classifier width; 0: the source split's ids
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    for key in ("triplet_weight", "ce_weight", "cd_weight", "margin"):
      if cfg[key] < 0:
        raise base.field_error(name, f"{key}={cfg[key]}: expected >= 0")
    for key in ("cd_temperature", "memory_temp"):
      if cfg[key] <= 0:
        raise base.field_error(name, f"{key}={cfg[key]}: expected > 0")
    if not 0 <= cfg["memory_momentum"] < 1:
      raise base.field_error(
        name, f"memory_momentum={cfg['memory_momentum']}: expected in [0, 1)"
      )
    if not 0 <= cfg["label_smoothing"] < 1:
      raise base.field_error(
        name, f"label_smoothing={cfg['label_smoothing']}: expected in [0, 1)"
      )
    self.num_classes = cfg["num_classes"] or setup.num_classes()
    self._triplet = sharding.shard_loss(
      losses.triplet, setup.mesh, margin=cfg["margin"], mining="batch_hard"
    )
    self._cd = sharding.shard_loss(
      losses.camera_diversity, setup.mesh, temperature=cfg["cd_temperature"]
    )

  @property
  def neck(self) -> str:
    return "bnneck"

  def network(self):
    return ClassifierNet(
      encoder=self.setup.make_encoder(),
      neck="bnneck",
      num_classes=self.num_classes,
      dtype=self.setup.dtype,
    )

  def init_extras(self, out_shapes):
    return memory_init(self.miner.max_clusters(), out_shapes)

  def loss(self, net, views, batch, ctx):
    cfg, mined = self.cfg, ctx.mined
    out = net(base.first(views, "image"))
    tgt = batch["domain"] == 1
    (ce_src, ce_tgt, tri, tri_aux), extras = pseudo_label_terms(
      self, out, batch, ctx
    )
    # pseudo ids of target rows only: source rows are never anchors or
    # positives, only negatives in the denominators
    pseudo = jnp.where(tgt, batch["label"], -1)
    cd, cd_aux = self._cd(out["feat"], pseudo, batch["cam"])
    total = (
      cfg["ce_weight"] * (ce_src + ce_tgt)
      + cfg["triplet_weight"] * tri
      + cfg["cd_weight"] * cd
    )
    aux = {
      "ce_src": ce_src,
      "ce_tgt": ce_tgt,
      "triplet": tri,
      "cd": cd,
      "cd_anchors": cd_aux["frac_anchors"],
      "frac_active": tri_aux.get("frac_active", jnp.float32(0)),
      "num_clusters": mined["num_clusters"].astype(jnp.float32),
      "stage": mined["stage"].astype(jnp.float32),
    }
    return total, aux, extras


class CameraCurriculumMiner(TargetClusterMiner):
  """DomainMix's target clustering restricted to CaCL's growing set of
  target cameras, after a source-only warm-up (see the module docstring).

  State (besides `TargetClusterMiner`'s): "order" int32 [c] (camera ids by
  MMD, -1 until known), "mmd" float32 [c] (their MMD^2), "stage" int32
  (-1: warm-up), "camera_bias" float32. The step of a mining is
  generation x every_steps (the loop mines at every multiple of it).
  """

  NAME = "camera_curriculum"
  FIELDS = {
    **TargetClusterMiner.FIELDS,
    "source_steps": fields.REQUIRED,  # source-only warm-up (0: none)
    "stage_steps": fields.REQUIRED,  # steps per camera stage
    "mmd_images": 1000,  # per side and camera (<= 0: all)
    "mmd_scales": curriculum.SCALES,
  }

  def __init__(self, cfg, setup):
    super().__init__(cfg, setup)
    every = self.every_steps
    for key in ("source_steps", "stage_steps"):
      v = cfg[key]
      if v < (1 if key == "stage_steps" else 0) or v % every:
        raise ConfigError(
          f"config.miner.{key}={v}: expected a multiple of "
          f"config.miner.every_steps={every}"
          + (" (>= 1)" if key == "stage_steps" else "")
        )
    scales = tuple(cfg["mmd_scales"])
    if not scales or min(scales) <= 0:
      raise ConfigError(
        f"config.miner.mmd_scales={scales}: expected positive numbers"
      )
    self._source = None

  def stage_at(self, step: int) -> int:
    """The curriculum stage of `step` (-1: warm-up; the last stage, all
    cameras, lasts to the end)."""
    if step < self.cfg["source_steps"]:
      return -1
    stage = (step - self.cfg["source_steps"]) // self.cfg["stage_steps"]
    return min(stage, len(np.unique(self.cams())) - 1)

  def source_images(self) -> np.ndarray:
    """uint8 [n, h, w, 3]: the source's training split."""
    if self._source is None:
      from idlearn import data

      s = self.setup.input
      self._source = data.load_split(
        s["name"],
        s["split"],
        image_size=tuple(s["image_size"]),
        data_dir=s["data_dir"] or None,
        manual_dir=s["manual_dir"] or None,
      )["image"]
    return self._source

  def init_state(self, feature_dims):
    c = len(np.unique(self.cams()))
    return {
      **super().init_state(feature_dims),
      "order": np.full((c,), -1, np.int32),
      "mmd": np.zeros((c,), np.float32),
      "stage": np.full((), -1, np.int32),
      "camera_bias": np.zeros((), np.float32),
    }

  def refresh(self, features, state):
    cfg, cams = self.cfg, self.cams()
    step = int(state["generation"]) * self.every_steps
    stage = self.stage_at(step)
    new = {k: np.asarray(v).copy() for k, v in state.items()}
    new["generation"] = np.int32(state["generation"] + 1)
    new["stage"] = np.int32(stage)
    if stage < 0:
      message = (
        f"CaCL warm-up: source batches only until step {cfg['source_steps']}"
      )
      return new, {"curriculum/stage": -1.0}, message

    def embed(images):
      return features(images, batch_size=cfg["batch_size"])[cfg["feature"]]

    lines, feats = [], None
    if new["order"][0] < 0:  # the first stage: order the cameras
      feats, line = self._order_cameras(embed, new)
      lines.append(line)
    chosen = curriculum.stage_cameras(new["order"], stage)
    include = np.isin(cams, chosen)
    feats = feats[include] if feats is not None else embed(
      self.images()[include]
    )  # fmt: skip
    # a new stage (a new image set) sets its own independence threshold
    same = stage == int(state["stage"])
    threshold = float(state["indep_threshold"]) if same else -1.0
    clustered, info = self.cluster(feats, threshold, state, include)
    new.update(clustered)
    bias, c = curriculum.camera_bias(new["pseudo"], cams)
    new["camera_bias"] = np.float32(bias)
    n_in = int(include.sum())
    report = {
      "curriculum/stage": float(stage),
      "curriculum/cameras": float(len(chosen)),
      "curriculum/target_images": float(n_in),
      "pseudo/num_clusters": float(c),
      "pseudo/num_dropped": float(info["num_dropped"]),
      "pseudo/camera_bias": bias,
    }
    lines.append(
      f"CaCL stage {stage + 1}/{len(new['order'])}: cameras "
      f"{chosen.tolist()} ({n_in} target images): {c} pseudo identities, "
      f"camera bias {bias:.2f}, {info['num_dropped']} images unused"
      + ("" if c else " (source batches only until the next mining)")
    )
    return new, report, "; ".join(lines)

  def _order_cameras(self, embed, new):
    """Writes "order" and "mmd" into `new`; returns the whole target's
    features and the log line."""
    cfg, feats = self.cfg, embed(self.images())
    order, dist = curriculum.camera_order(
      embed(self.source_images()), feats, self.cams(),
      scales=tuple(cfg["mmd_scales"]), max_images=cfg["mmd_images"],
      seed=self.setup.seed,
    )  # fmt: skip
    new["order"], new["mmd"] = order, dist.astype(np.float32)
    pairs = zip(order, dist, strict=True)
    ranked = " < ".join(f"cam {c} {d:.4f}" for c, d in pairs)
    return feats, f"camera order (0-based ids) by MMD^2 to source: {ranked}"

  def loader(self, state, step):
    # the source order is drawn from the step too (a new stream each mining)
    seed = self.setup.seed + 104_729 * (step + 1)
    if int(state["stage"]) < 0 or int(state["num_clusters"]) == 0:
      return TwoDomainLoader(base.make_loader(self.setup.input, seed))
    labels = np.asarray(state["pseudo"])
    return self.two_domain_loader(labels, step, seed, repeat_ids=True)


METHODS = (CaCL,)
MINERS = (CameraCurriculumMiner,)

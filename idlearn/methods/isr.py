"""ISR: identity-seeking self-supervision from matched positives.

Dou et al., "Identity-Seeking Self-Supervised Representation Learning for
Generalizable Person Re-identification", ICCV 2023. The person instances
of two frames of a video form a bipartite graph weighted by embedding
similarity; the maximum-weight matching gives each instance one positive
(a person appears at most once per frame), and the contrastive loss
weights each pair by its reliability (`losses.reliability_contrastive`).

Views by role: "anchor" (side A: 1 view, or 2 with the instance term) and
"partner" (side B). Batches come from one of:
- sampler "frame_pairs" (video): side A a frame, side B a frame
  `frame_gap` later of the same tracklet (`views.partner.frame = 1`); the
  two sides are matched over the global batch, Hungarian on the host or
  Sinkhorn on device (`matching`);
- sampler "camera_pairs": side B an image of another camera; with
  `cross_camera` only cross-camera pairs are matched;
- the "camera_pairs" miner (`matching="given"`): every epoch the current
  model embeds the whole training split and each camera's images are
  matched to the other cameras' (`mining.mine_cross_camera_pairs`); rows
  are then (image, mined partner) and need no in-batch matching. An
  instance term (`instance_weight`: InfoNCE between the two anchor views)
  trains the features from the start, while mined pairs are still random.

aux "match_acc" is the fraction of matches that found the true partner
(same tracklet, or same identity), read from labels for reporting only.
Assumption: the cross-camera and split-level mining are our extension of
the paper's frame matching to still images of several cameras.
"""

import functools

import jax.numpy as jnp
import numpy as np

from idlearn import fields, losses, sharding
from idlearn.errors import ConfigError
from idlearn.methods import base
from idlearn.methods.contrastive import PROJECTOR_FIELDS, ProjectionMethod
from idlearn.mining import camera_pairs, matching

MATCHINGS = ("hungarian", "sinkhorn", "given")


class ISR(ProjectionMethod):
  NAMES = ("isr",)
  VIEWS = {"anchor": 1, "partner": 1}
  MINERS = ("camera_pairs",)
  FIELDS = {
    "temperature": 0.07,
    "sigma": 0.5,  # reliability temperature (sigma -> inf: plain InfoNCE)
    # hungarian (exact, host) | sinkhorn (device) | given (rows are already
    # positive pairs: the camera_pairs miner)
    "matching": "hungarian",
    # > 0: plus this weight times InfoNCE between the two anchor views
    "instance_weight": 0.0,
    "min_similarity": -1.0,  # matched pairs below this cosine are dropped
    "sinkhorn_temperature": 0.02,
    "sinkhorn_iters": 200,
    # match only instances of different cameras (needs batch "pair_cam")
    "cross_camera": False,
    **PROJECTOR_FIELDS,
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    if cfg["matching"] not in MATCHINGS:
      raise base.field_error(
        name, f"matching={cfg['matching']!r}: one of {MATCHINGS}"
      )
    if (cfg["matching"] == "given") != (miner is not None):
      raise base.field_error(
        name,
        "matching='given' reads the pairs of config.miner (camera_pairs) "
        "and in-batch matching needs no miner; got matching="
        f"{cfg['matching']!r} with miner {getattr(miner, 'NAME', None)!r}",
      )
    if cfg["instance_weight"] > 0 and setup.views.get("anchor", 0) < 2:
      raise base.field_error(
        name,
        f"instance_weight={cfg['instance_weight']} needs 2 anchor views "
        "(config.views.anchor.count = 2)",
      )
    mesh, t = setup.mesh, cfg["temperature"]
    self._contrast = sharding.shard_loss(
      losses.reliability_contrastive, mesh, temperature=t, sigma=cfg["sigma"]
    )
    self._instance = sharding.shard_loss(losses.info_nce, mesh, temperature=t)
    self._align = functools.partial(
      matching.align_by_matching,
      method=cfg["matching"],
      min_similarity=cfg["min_similarity"],
      temperature=cfg["sinkhorn_temperature"],
      num_iters=cfg["sinkhorn_iters"],
    )

  def loss(self, net, views, batch, ctx):
    cfg = self.cfg
    anchors = net.views(views["anchor"])
    za, zb = anchors[0]["proj"], net(views["partner"][0])["proj"]
    if cfg["matching"] == "given":
      partner = jnp.arange(za.shape[0])
      valid = jnp.ones(za.shape[0], bool)
    else:
      allowed = None
      if cfg["cross_camera"]:
        cams = batch["pair_cam"]  # [b, 2]: cameras of side A and side B
        allowed = cams[:, 0][:, None] != cams[:, 1][None, :]
      # On the global batch: one matching over all devices' instances.
      partner, valid = self._align(za, zb, allowed=allowed)
    value, aux = self._contrast(za, jnp.take(zb, partner, axis=0), valid)
    aux["frac_matched"] = jnp.mean(valid.astype(jnp.float32))
    if cfg["instance_weight"] > 0:
      inst, _ = self._instance(za, anchors[1]["proj"])
      aux["instance"] = inst
      value = value + cfg["instance_weight"] * inst
    if "tracklet" in batch:  # frame pairs: the same tracklet
      hit = jnp.take(batch["tracklet"], partner) == batch["tracklet"]
    elif "pair_id" in batch:  # camera or mined pairs: the same identity
      ids = batch["pair_id"]
      hit = jnp.take(ids[:, 1], partner) == ids[:, 0]
    else:
      return value, aux, ctx.extras
    hit &= valid
    aux["match_acc"] = jnp.sum(hit) / jnp.maximum(jnp.sum(valid), 1)
    return value, aux, ctx.extras


class CameraPairMiner(base.Miner):
  """Mines cross-camera pairs over the training split every `every_steps`
  and makes the loader of the (image, partner) pairs."""

  NAME = "camera_pairs"
  FIELDS = {
    "every_steps": fields.REQUIRED,  # re-mining interval (e.g. one epoch)
    "feature": "eval",  # eval | emb: the feature that is matched
    "camera_centering": True,  # subtract each camera's mean feature first
    "min_similarity": -1.0,  # pairs below this cosine are not used
    # keep only this fraction of the matched pairs, the most similar ones
    # (the reliable pairs; 1.0: all)
    "keep_fraction": 1.0,
    "batch_size": 64,  # feature extraction
  }

  def __init__(self, cfg, setup):
    super().__init__(cfg, setup)
    self._split = None

  def split(self) -> dict:
    """The training split in memory: image [n, h, w, 3], cam, id [n]."""
    if self._split is None:
      from idlearn import data

      t = self.setup.input
      self._split = data.load_split(
        t["name"],
        t["split"],
        image_size=tuple(t["image_size"]),
        data_dir=t["data_dir"] or None,
        manual_dir=t["manual_dir"] or None,
      )
    return self._split

  def sample(self) -> np.ndarray:
    return np.zeros((1, 2, *self.setup.input["image_size"], 3), np.uint8)

  def init_state(self, feature_dims):
    del feature_dims
    return {"partner": np.full((len(self.split()["cam"]),), -1, np.int32)}

  def refresh(self, features, state):
    del state
    split = self.split()
    feats = features(split["image"], batch_size=self.cfg["batch_size"])
    partner, score = camera_pairs.mine_cross_camera_pairs(
      feats[self.cfg["feature"]],
      split["cam"],
      camera_centering=self.cfg["camera_centering"],
      min_similarity=self.cfg["min_similarity"],
      keep_fraction=self.cfg["keep_fraction"],
    )
    ok = partner >= 0
    id_acc = float(np.mean(split["id"][partner[ok]] == split["id"][ok]))
    info = {
      "pairs/num_pairs": float(ok.sum()),
      "pairs/mean_sim": float(score[ok].mean()) if ok.any() else 0.0,
      "pairs/id_acc": id_acc,
    }
    message = (
      f"mined {int(ok.sum())} cross-camera pairs, {100 * id_acc:.1f}% of "
      "them of one identity (labels read for this report only)"
    )
    return {"partner": partner.astype(np.int32)}, info, message

  def loader(self, state, step):
    partner = np.asarray(state["partner"])
    rows = np.flatnonzero(partner >= 0)
    if not len(rows):
      raise ConfigError(
        "no cross-camera pair was mined (every match below "
        f"config.miner.min_similarity={self.cfg['min_similarity']})"
      )
    return base.make_loader(
      self.setup.input,
      self.setup.seed + 7919 * (step + 1),
      sampler="pairs",
      pairs=np.stack([rows, partner[rows]], 1),
    )


METHODS = (ISR,)
MINERS = (CameraPairMiner,)

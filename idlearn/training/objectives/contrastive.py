"""Two-view self-supervised objectives (SimCLR, DCL, DCLW, Barlow Twins) and
ISR's matched-frame contrastive objective."""

import functools

import jax.numpy as jnp

from idlearn import losses
from idlearn.mining import matching
from idlearn.training import sharding
from idlearn.training.objectives.base import Objective, need_views, pick

# Two-view objectives: loss(z1, z2) on `on` of views 0 and 1.
_PAIR = {
  "info_nce": {"temperature": 0.1},
  "dcl": {"temperature": 0.1},
  "dclw": {"temperature": 0.1, "sigma": 0.5},
  "barlow_twins": {"lambda_offdiag": 5e-3},
}
_ISR = {
  "temperature": 0.07,
  "sigma": 0.5,  # reliability temperature (sigma -> inf: plain InfoNCE)
  # hungarian (exact, host) | sinkhorn (device) | given (rows are already
  # positive pairs: mined between steps, config.pair_mining)
  "matching": "hungarian",
  "pair_views": (0, 1),  # the two sides' views
  # > 0: plus this weight times InfoNCE between views 0 and 1 (two views of
  # side A; then pair_views = (0, 2)).
  "instance_weight": 0.0,
  "min_similarity": -1.0,  # matched pairs below this cosine are dropped
  "sinkhorn_temperature": 0.02,
  "sinkhorn_iters": 200,
  # Match only instances of different cameras (camera_pairs batches: the
  # two sides are images of different cameras; needs batch "pair_cam").
  "cross_camera": False,
}
# Camera adversary (any pair objective): a discriminator predicts each
# view's camera from "emb" (`losses.domain_classification`, which trains
# only the discriminator) and `losses.domain_balance` (which trains only
# the encoder) pushes the camera out of the embedding, as DomainMix does
# for domains. Needs a model with domain_classes = number of cameras.
_ADVERSARY = {"camera_adversary": 0.0}  # weight of the balance term; 0: off
FIELDS = {
  **{k: {"on": "proj", **v, **_ADVERSARY} for k, v in _PAIR.items()},
  "isr": {"on": "proj", **_ISR},
}


def camera_adversary(outs, cams, weight):
  """(weighted loss, aux): the discriminator's CE + weight * balance,
  averaged over the views."""
  disc, bal, acc = 0.0, 0.0, 0.0
  for out in outs:
    if "domain_logits" not in out:
      raise ValueError(
        "config.loss.camera_adversary > 0 needs a model with "
        "domain_classes = the number of cameras"
      )
    d, d_aux = losses.domain_classification(out["domain_logits"], cams)
    b, _ = losses.domain_balance(out["domain_logits_adv"])
    disc, bal, acc = disc + d, bal + b, acc + d_aux["accuracy"]
  n = len(outs)
  aux = {"cam_disc": disc / n, "cam_balance": bal / n, "cam_acc": acc / n}
  return (disc + weight * bal) / n, aux


def make_pair(name: str, cfg: dict, mesh) -> Objective:
  kw = {k: cfg[k] for k in _PAIR[name]}
  pair_loss = sharding.shard_loss(getattr(losses, name), mesh, **kw)

  def loss(outs, batch, ctx):
    need_views(name, outs, 2)
    value, aux = pair_loss(pick(outs, 0, cfg["on"]), pick(outs, 1, cfg["on"]))
    if cfg["camera_adversary"] > 0:
      adv, adv_aux = camera_adversary(
        outs[:2], batch["cam"], cfg["camera_adversary"]
      )
      value, aux = value + adv, {**aux, **adv_aux}
    return value, aux

  return Objective(loss)


def make_isr(cfg: dict, mesh) -> Objective:
  """ISR (Dou et al., ICCV 2023): positives by bipartite matching.

  Views 0 and 1 are the two frames of frame-pair batches (sampler
  "frame_pairs"): row i of view 0 and row i of view 1 come from one
  tracklet, but the objective does not use that pairing. It matches the
  instances of frame A (view 0, the whole global batch) to those of frame B
  (view 1) by maximum-weight bipartite matching of their cosine
  similarities, takes each instance's partner as its positive, and weights
  the pairs by reliability (`losses.reliability_contrastive`). With
  `cross_camera` (sampler "camera_pairs") the two sides are images of
  different cameras and only cross-camera pairs are matched. aux
  "match_acc" is the fraction of matches that found the true partner
  (same tracklet, or same identity for camera pairs), a diagnostic only.
  """
  if cfg["matching"] not in ("hungarian", "sinkhorn", "given"):
    raise ValueError(
      f"config.loss.matching = {cfg['matching']!r}: expected hungarian, "
      "sinkhorn or given"
    )
  contrast = sharding.shard_loss(
    losses.reliability_contrastive,
    mesh,
    temperature=cfg["temperature"],
    sigma=cfg["sigma"],
  )
  instance = sharding.shard_loss(
    losses.info_nce, mesh, temperature=cfg["temperature"]
  )
  align = functools.partial(
    matching.align_by_matching,
    method=cfg["matching"],
    min_similarity=cfg["min_similarity"],
    temperature=cfg["sinkhorn_temperature"],
    num_iters=cfg["sinkhorn_iters"],
  )
  side_a, side_b = cfg["pair_views"]

  def loss(outs, batch, ctx):
    need_views("isr", outs, max(side_a, side_b) + 1)
    za, zb = pick(outs, side_a, cfg["on"]), pick(outs, side_b, cfg["on"])
    if cfg["matching"] == "given":
      partner = jnp.arange(za.shape[0])
      valid = jnp.ones(za.shape[0], bool)
    else:
      allowed = None
      if cfg["cross_camera"]:
        cams = batch["pair_cam"]  # [b, 2]: cameras of side A and side B
        allowed = cams[:, 0][:, None] != cams[:, 1][None, :]
      # On the global batch: one matching over all devices' instances.
      partner, valid = align(za, zb, allowed=allowed)
    z2 = jnp.take(zb, partner, axis=0)
    value, aux = contrast(za, z2, valid)
    aux["frac_matched"] = jnp.mean(valid.astype(jnp.float32))
    if cfg["instance_weight"] > 0:
      inst, _ = instance(pick(outs, 0, cfg["on"]), pick(outs, 1, cfg["on"]))
      aux["instance"] = inst
      value = value + cfg["instance_weight"] * inst
    if "pair_id" in batch or "tracklet" in batch:  # diagnostics only
      if "tracklet" in batch:  # frame pairs: the same tracklet
        hit = jnp.take(batch["tracklet"], partner) == batch["tracklet"]
      else:  # camera or mined pairs: the same identity
        ids = batch["pair_id"]
        hit = jnp.take(ids[:, 1], partner) == ids[:, 0]
      hit &= valid
      aux["match_acc"] = jnp.sum(hit) / jnp.maximum(jnp.sum(valid), 1)
    return value, aux

  return Objective(loss)


BUILDERS = {
  **{k: functools.partial(make_pair, k) for k in _PAIR},
  "isr": make_isr,
}

"""Cross-camera positive pairs mined from the whole training split.

ISR (Dou et al., ICCV 2023) finds positives by maximum-weight bipartite
matching between the instances of two video frames. For still images
taken by several cameras the same matching works between cameras: every
`every_steps` the current model embeds the whole training split, each
camera's images are matched to the images of the other cameras (Hungarian
algorithm on cosine similarities, optionally after subtracting each
camera's mean feature), and the next batches hold (image, matched partner)
pairs, which `objectives` "isr" with matching="given" pulls together,
weighted by reliability. Camera ids are used, identity labels are not (the
"pairs/id_acc" diagnostic reads them only to report how many mined pairs
are right).
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from idlearn.mining import matching
from idlearn.training import eval as eval_lib
from idlearn.training import fields
from idlearn.training import writer as writer_lib

FIELDS = {
  "every_steps": fields.REQUIRED,  # re-mining interval (e.g. one epoch)
  "feature": "eval",  # model output that is matched
  "camera_centering": True,  # subtract each camera's mean feature first
  "min_similarity": -1.0,  # pairs below this cosine are not used
  # keep only this fraction of the matched pairs, the most similar ones
  # (the reliable pairs; 1.0: all)
  "keep_fraction": 1.0,
  "batch_size": 64,  # feature extraction
}


def mine_cross_camera_pairs(
  feats: np.ndarray,
  cams: np.ndarray,
  *,
  camera_centering: bool = True,
  min_similarity: float = -1.0,
  keep_fraction: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
  """Each image's partner in another camera by maximum-weight matching.

  For every camera c, the images of c are matched one-to-one to the images
  of all other cameras (`matching.max_weight_matching`); an image of c is
  left without partner when c has more images than the others together,
  its match is below `min_similarity`, or its match is not among the
  `keep_fraction` most similar of all matched pairs.

  Args:
    feats: [n, d] features.
    cams: [n] camera ids.
    camera_centering: match unit features minus their camera's mean
      (re-normalised), so that the camera itself does not decide.
    min_similarity: smallest accepted cosine similarity.
    keep_fraction: in (0, 1], the share of matched pairs kept.
  Returns:
    (partner [n] int64, -1 where unmatched; similarity [n] float32 of the
    pair, 0 where unmatched).
  """
  feats, cams = np.asarray(feats, np.float64), np.asarray(cams)
  if feats.ndim != 2 or cams.shape != (len(feats),):
    raise ValueError(
      f"feats must be [n, d] and cams [n], got {feats.shape}, {cams.shape}"
    )
  unit = _unit(feats)
  if camera_centering:
    for c in np.unique(cams):
      unit[cams == c] -= unit[cams == c].mean(0)
    unit = _unit(unit)
  partner = np.full(len(feats), -1, np.int64)
  score = np.zeros(len(feats), np.float32)
  for c in np.unique(cams):
    rows, cols = np.flatnonzero(cams == c), np.flatnonzero(cams != c)
    if not len(cols):
      continue
    sim = unit[rows] @ unit[cols].T
    r, k = matching.max_weight_matching(sim, min_similarity=min_similarity)
    partner[rows[r]] = cols[k]
    score[rows[r]] = sim[r, k]
  if not 0 < keep_fraction <= 1:
    raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
  matched = np.flatnonzero(partner >= 0)
  keep = int(np.ceil(keep_fraction * len(matched)))
  drop = matched[np.argsort(-score[matched], kind="stable")[keep:]]
  partner[drop], score[drop] = -1, 0.0
  return partner, score


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class CameraPairMiner:
  """Mines cross-camera pairs and makes the loader of the pairs.

  Args:
    cfg: resolved `config.pair_mining` fields (see `FIELDS`).
    model: the IdModel being trained.
    make_loader: (dataset fields, global_batch_size, seed, labels=None,
      pairs=None) -> a train loader (see `inputs.make_loader`).
    input_cfg: the resolved `config.input` (its split is mined).
    seed: the run's seed.
  """

  def __init__(self, cfg, model, make_loader, input_cfg, seed):
    self.cfg, self.model, self.seed = cfg, model, seed
    self.every_steps = cfg["every_steps"]
    if self.every_steps <= 0:
      raise ValueError("config.pair_mining.every_steps must be > 0")
    self._make_loader, self._input = make_loader, input_cfg
    self._split = None

  def split(self) -> dict:
    """The training split in memory: image [n, h, w, 3], cam, id [n]."""
    if self._split is None:
      from idlearn import data

      t = self._input
      self._split = data.load_split(
        t["name"],
        t["split"],
        image_size=tuple(t["image_size"]),
        data_dir=t["data_dir"] or None,
        manual_dir=t["manual_dir"] or None,
      )
    return self._split

  def sample(self) -> np.ndarray:
    """One input pair (uint8 [1, 2, h, w, 3]) of the training shape."""
    return np.zeros((1, 2, *self._input["image_size"], 3), np.uint8)

  def init_extras(self, out_shapes: Mapping[str, Any]) -> dict:
    del out_shapes
    n = len(self.split()["cam"])
    return {
      "partner": jnp.full((n,), -1, jnp.int32),
      "partner_sim": jnp.zeros((n,), jnp.float32),
    }

  def refresh(self, state: Any, mesh: Any) -> tuple[Any, dict]:
    """Re-mines the pairs with `state`'s model; returns (state, info)."""
    split = self.split()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    feats = eval_lib.extract(
      self.model,
      variables,
      split["image"],
      size=tuple(self._input["image_size"]),
      feature=self.cfg["feature"],
      batch_size=self.cfg["batch_size"],
      mesh=mesh,
    )
    partner, score = mine_cross_camera_pairs(
      feats,
      split["cam"],
      camera_centering=self.cfg["camera_centering"],
      min_similarity=self.cfg["min_similarity"],
      keep_fraction=self.cfg["keep_fraction"],
    )
    ok = partner >= 0
    id_acc = float(np.mean(split["id"][partner[ok]] == split["id"][ok]))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    extras = {
      **state.extras,
      "partner": jax.device_put(partner.astype(np.int32), rep),
      "partner_sim": jax.device_put(score, rep),
    }
    writer_lib.say(
      f"mined {int(ok.sum())} cross-camera pairs, {100 * id_acc:.1f}% of "
      "them of one identity (labels read for this report only)"
    )
    info = {
      "pairs/num_pairs": float(ok.sum()),
      "pairs/mean_sim": float(score[ok].mean()) if ok.any() else 0.0,
      "pairs/id_acc": id_acc,
    }
    return state.replace(extras=extras), info

  def loader(self, extras: Any, step: int) -> Any:
    """Batches of the (image, partner) pairs mined at `step`."""
    partner = np.asarray(jax.device_get(extras["partner"]))
    rows = np.flatnonzero(partner >= 0)
    if not len(rows):
      raise ValueError(
        "no cross-camera pair was mined (every match below "
        f"config.pair_mining.min_similarity={self.cfg['min_similarity']})"
      )
    pairs = np.stack([rows, partner[rows]], 1)
    return self._make_loader(
      {**self._input, "sampler": "pairs"},
      self._input["global_batch_size"],
      self.seed + 7919 * (step + 1),
      pairs=pairs,
    )

"""Periodic evaluation of the train state through `idlearn.evaluators`."""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from idlearn.training import fields, sharding
from idlearn.training import step as step_lib

# reid: CMC / mAP retrieval of images (Market-1501 protocol);
# video_reid: the same on tracklets (frame features averaged; MARS);
# verification: face pairs, 10-fold accuracy, ROC AUC, TAR@FAR (LFW).
FIELDS = {
  "type": "reid",
  "data": fields.REQUIRED,  # an idlearn.data set name
  "data_dir": "",
  "manual_dir": "",  # the data set's files (default: its bundled copy)
  "image_size": (256, 128),
  "batch_size": 64,
  "log_steps": 0,  # 0: only after the last step
  "feature": "eval",  # model output retrieved with
  "metric": "cosine",
  "use_ema": False,  # evaluate state.ema_params
  # reid: also report retrieval after subtracting each camera's mean
  # feature ("eval/<name>/camnorm/rank1"): test-time camera normalisation
  # from camera ids alone (no identity labels).
  "camera_centering": False,
  # features of the image plus its horizontal mirror (test-time flip, as
  # face verification and re-ID benchmarks commonly report)
  "flip_test": False,
  # verification pairs (att_faces: a seeded balanced list; lfw: pairs.txt)
  "folds": 10,
  "pairs_per_fold": 60,
  "pairs_seed": 0,
}


def extract(
  model: Any,
  variables: Mapping[str, Any],
  images: np.ndarray,
  *,
  size: tuple[int, int],
  feature: str = "eval",
  batch_size: int = 64,
  mesh: Any = None,
) -> np.ndarray:
  """uint8 [n, H, W, 3] -> float32 [n, d] features, batched over the mesh.

  Batches are padded to a multiple of the device count (the padding rows
  are dropped); every process passes the same images and gets all features.
  """
  from idlearn import augment

  mesh = mesh or sharding.make_data_mesh()
  n_dev = mesh.shape[sharding.DATA_AXIS]
  bs = -(-batch_size // n_dev) * n_dev
  rows = sharding.batch_sharding(mesh)

  @jax.jit
  def predict(variables, x):
    outs, _ = step_lib.forward_views(
      model,
      variables["params"],
      variables.get("batch_stats", {}),
      [augment.preprocess(x, size)],
      train=False,
    )
    return jax.lax.with_sharding_constraint(
      outs[0][feature].astype(jnp.float32), sharding.replicated(mesh)
    )

  feats = []
  for i in range(0, len(images), bs):
    chunk = images[i : i + bs]
    pad = np.zeros((bs - len(chunk), *chunk.shape[1:]), chunk.dtype)
    x = np.concatenate([chunk, pad])
    x = jax.make_array_from_callback(x.shape, rows, lambda idx, x=x: x[idx])
    feats.append(sharding.to_host(predict(variables, x))[: len(chunk)])
  return np.concatenate(feats)


def _variables(state: Any, use_ema: bool) -> dict:
  params = state.ema_params if use_ema else state.params
  if params is None:
    raise ValueError("use_ema=True but the state has no EMA parameters")
  return {"params": params, "batch_stats": state.batch_stats}


class _Evaluator:
  """Shared set-up: name, model, fields, lazily loaded evaluation data.

  Args:
    name: key under which results are logged ("eval/<name>/rank1").
    model: the IdModel being trained.
    cfg: resolved fields (see `FIELDS`).
  """

  def __init__(self, name: str, model: Any, cfg: Mapping[str, Any]):
    self.name, self.model, self.cfg = name, model, cfg
    self.log_steps = cfg["log_steps"]
    self._data = None

  def _files(self) -> dict:
    return {
      "data_dir": self.cfg["data_dir"] or None,
      "manual_dir": self.cfg["manual_dir"] or None,
    }

  def _features(self, state: Any, images: np.ndarray) -> np.ndarray:
    variables = _variables(state, self.cfg["use_ema"])

    def feats(x):
      return extract(
        self.model,
        variables,
        x,
        size=tuple(self.cfg["image_size"]),
        feature=self.cfg["feature"],
        batch_size=self.cfg["batch_size"],
      )

    f = feats(images)
    if self.cfg["flip_test"]:
      f = _unit(f) + _unit(feats(images[:, :, ::-1]))
    return f

  def data(self):
    if self._data is None:
      self._data = self._load()
    return self._data

  def _load(self):
    from idlearn import data

    return data.reid_eval_sets(
      self.cfg["data"],
      image_size=tuple(self.cfg["image_size"]),
      **self._files(),
    )


class ReidEvaluator(_Evaluator):
  """Re-ID retrieval on a data set's query/gallery protocol."""

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    """Evaluates `state`; returns {"eval/<name>/rank1": ..., ...}.

    With `picture_dir`, process 0 also writes retrieval_grid.png, cmc.png
    (and failure_cases.png) there, through `idlearn.evaluators.plots`.
    """
    from idlearn.evaluators import reid

    q, g = self.data()
    qf = self._features(state, q["image"])
    gf = qf if g is q else self._features(state, g["image"])
    res = reid.evaluate(
      qf, q["id"], q["cam"], gf, g["id"], g["cam"], metric=self.cfg["metric"]
    )
    if picture_dir is not None and jax.process_index() == 0:
      from idlearn.evaluators import plots

      plots.write_eval_pictures(
        picture_dir, q, g, qf, gf, cmc=res["cmc"], metric=self.cfg["metric"]
      )
    out = _reid_results(self.name, res)
    if self.cfg["camera_centering"]:
      qc, gc = center_cameras(qf, q["cam"], gf, g["cam"], same=g is q)
      res = reid.evaluate(
        qc, q["id"], q["cam"], gc, g["id"], g["cam"], metric=self.cfg["metric"]
      )
      out.update(_reid_results(f"{self.name}/camnorm", res))
    return out


def center_cameras(
  qf: np.ndarray,
  q_cams: np.ndarray,
  gf: np.ndarray,
  g_cams: np.ndarray,
  *,
  same: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """Unit features minus their camera's mean unit feature.

  The mean of camera c is over every query and gallery image of camera c
  (once when query and gallery are the same set, `same=True`).

  Returns:
    (query [n, d], gallery [m, d]) float32 features.
  """

  qu, gu = _unit(np.asarray(qf, np.float64)), _unit(np.asarray(gf, np.float64))
  pool = qu if same else np.concatenate([qu, gu])
  cams = np.asarray(q_cams) if same else np.concatenate([q_cams, g_cams])
  means = {c: pool[cams == c].mean(0) for c in np.unique(cams)}
  qc = qu - np.stack([means[c] for c in q_cams])
  gc = gu - np.stack([means[c] for c in g_cams])
  return qc.astype(np.float32), gc.astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _reid_results(name: str, res: Mapping[str, Any]) -> dict[str, float]:
  keys = ("rank1", "rank5", "rank10", "mAP", "mINP")
  return {f"eval/{name}/{k}": float(res[k]) for k in keys if k in res}


def pool_tracklets(
  feats: np.ndarray, split: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Frame features [n, d] -> (tracklet features [t, d], ids [t], cams [t]).

  Each tracklet's feature is the mean of its frames' L2-normalised
  features (MARS protocol: average pooling over the sequence).
  """
  track = np.asarray(split["tracklet"])
  uniq, inv = np.unique(track, return_inverse=True)
  unit = _unit(feats)
  pooled = np.zeros((len(uniq), feats.shape[1]), np.float64)
  np.add.at(pooled, inv, unit)
  pooled /= np.bincount(inv)[:, None]
  first = np.zeros(len(uniq), np.int64)
  first[inv[::-1]] = np.arange(len(track))[::-1]  # a frame of each tracklet
  return pooled.astype(np.float32), split["id"][first], split["cam"][first]


class VideoReidEvaluator(_Evaluator):
  """Tracklet retrieval: query tracklets against gallery tracklets."""

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    from idlearn.evaluators import reid

    del picture_dir  # per-frame pictures are not drawn for tracklets
    q, g = self.data()
    if "tracklet" not in q:
      raise ValueError(
        f"config.evals.{self.name}: type video_reid needs a video data set "
        f"(records with a tracklet), got {self.cfg['data']!r}"
      )
    qf, qi, qc = pool_tracklets(self._features(state, q["image"]), q)
    gf, gi, gc = pool_tracklets(self._features(state, g["image"]), g)
    res = reid.evaluate(qf, qi, qc, gf, gi, gc, metric=self.cfg["metric"])
    return _reid_results(self.name, res)


class VerificationEvaluator(_Evaluator):
  """Face verification on the data set's pairs (10-fold protocol)."""

  def _load(self):
    from idlearn import data

    pairs = data.verification_pairs(
      self.cfg["data"],
      folds=self.cfg["folds"],
      pairs_per_fold=self.cfg["pairs_per_fold"],
      seed=self.cfg["pairs_seed"],
      **self._files(),
    )
    images = data.load_split(
      self.cfg["data"],
      pairs["split"],
      image_size=tuple(self.cfg["image_size"]),
      **self._files(),
    )["image"]
    return pairs, images

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    from idlearn.evaluators import verification

    del picture_dir
    pairs, images = self.data()
    feats = self._features(state, images)
    res = verification.evaluate(
      feats[pairs["index1"]],
      feats[pairs["index2"]],
      pairs["same"],
      fold_ids=pairs["fold"],
    )
    out = {
      f"eval/{self.name}/{k}": float(res[k])
      for k in ("accuracy", "accuracy_std", "roc_auc")
    }
    for far, tar in res["tar_at_far"].items():
      out[f"eval/{self.name}/tar@far={far:g}"] = float(tar)
    return out


_TYPES = {
  "reid": ReidEvaluator,
  "video_reid": VideoReidEvaluator,
  "verification": VerificationEvaluator,
}


def make_evaluators(config: Mapping[str, Any] | None, model: Any) -> list:
  """config.evals ({name: fields}) -> evaluators with `.run(state)`."""
  out = []
  for name, group in sorted(dict(config or {}).items()):
    cfg = fields.resolve(group, FIELDS, f"config.evals.{name}")
    kind = fields.choice(cfg["type"], _TYPES, f"config.evals.{name}.type")
    out.append(_TYPES[kind](name, model, cfg))
  return out

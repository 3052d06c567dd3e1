"""Periodic evaluation of the train state through `idlearn.evaluators`.

Each evaluator embeds its data with the state's retrieval encoder
(`encoder.RunEncoder`: compiled once per image size and reused) and
scores it under its protocol.
"""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from idlearn import fields
from idlearn.errors import ConfigError
from idlearn.evaluators.features import center_cameras, pool_tracklets

COMMON_FIELDS = {
  "type": "reid",
  "data": fields.REQUIRED,  # an idlearn.data set name
  "data_dir": "",
  "manual_dir": "",  # the data set's files (default: its bundled copy)
  "image_size": (256, 128),
  "batch_size": 64,
  "log_steps": 0,  # 0: only after the last step
  "feature": "eval",  # eval (the neck's output) | emb (the encoder's)
  "use_ema": False,  # evaluate the EMA teacher
  # features of the image plus its horizontal mirror (test-time flip, as
  # face verification and re-ID benchmarks commonly report)
  "flip_test": False,
}


def preprocessing(
  config: Mapping[str, Any] | None, input_size: tuple[int, int]
) -> dict[str, Any]:
  """How the run feeds its encoder at evaluation (the first evaluator's
  image size, feature and flip test; else the input size), kept with the
  encoder it leaves so that its users embed the same way."""
  for _, group in sorted(dict(config or {}).items()):
    cfg = {**COMMON_FIELDS, **dict(group)}
    return {
      "image_size": tuple(cfg["image_size"]),
      "feature": cfg["feature"],
      "flip_test": cfg["flip_test"],
      "use_ema": cfg["use_ema"],  # which parameters leave the run
    }
  return {
    "image_size": tuple(input_size),
    "feature": "eval",
    "flip_test": False,
    "use_ema": False,
  }


class _Evaluator:
  """Shared set-up: name, fields, lazily loaded evaluation data.

  Args:
    name: key under which results are logged ("eval/<name>/rank1").
    cfg: resolved fields.
    features: the run's `encoder.RunEncoder`.
  """

  FIELDS: dict[str, Any] = {}

  def __init__(self, name: str, cfg: Mapping[str, Any], features: Any):
    self.name, self.cfg, self._features = name, cfg, features
    self.log_steps = cfg["log_steps"]
    self._data = None

  def _files(self) -> dict:
    return {
      "data_dir": self.cfg["data_dir"] or None,
      "manual_dir": self.cfg["manual_dir"] or None,
    }

  def features(self, state: Any, images: np.ndarray) -> np.ndarray:
    cfg = self.cfg
    feats = self._features(
      state,
      images,
      image_size=tuple(cfg["image_size"]),
      batch_size=cfg["batch_size"],
      use_ema=cfg["use_ema"],
      flip=cfg["flip_test"],
    )
    return feats[cfg["feature"]]

  def info(self) -> dict[str, Any]:
    """Facts worth keeping with the encoder (none by default)."""
    return {}

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

  FIELDS = {
    "metric": "cosine",
    # also report retrieval after subtracting each camera's mean feature
    # ("eval/<name>/camnorm/rank1"): test-time camera normalisation from
    # camera ids alone (no identity labels)
    "camera_centering": False,
  }

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    """Evaluates `state`; returns {"eval/<name>/rank1": ..., ...}.

    With `picture_dir`, process 0 also writes retrieval_grid.png, cmc.png
    (and failure_cases.png) there, through `idlearn.evaluators.plots`.
    """
    from idlearn.evaluators import reid

    q, g = self.data()
    metric = self.cfg["metric"]
    qf = self.features(state, q["image"])
    gf = qf if g is q else self.features(state, g["image"])
    res = reid.evaluate(
      qf, q["id"], q["cam"], gf, g["id"], g["cam"], metric=metric
    )
    if picture_dir is not None and jax.process_index() == 0:
      from idlearn.evaluators import plots

      plots.write_eval_pictures(
        picture_dir, q, g, qf, gf, cmc=res["cmc"], metric=metric
      )
    out = _reid_results(self.name, res)
    if self.cfg["camera_centering"]:
      qc, gc = _centered(qf, q["cam"], gf, g["cam"], same=g is q)
      res = reid.evaluate(
        qc, q["id"], q["cam"], gc, g["id"], g["cam"], metric=metric
      )
      out.update(_reid_results(f"{self.name}/camnorm", res))
    return out


def _centered(qf, q_cams, gf, g_cams, *, same: bool):
  """Query and gallery centred per camera over both (once when they are
  the same set); float32."""
  if same:
    c = center_cameras(qf, q_cams).astype(np.float32)
    return c, c
  both = center_cameras(
    np.concatenate([qf, gf]), np.concatenate([q_cams, g_cams])
  ).astype(np.float32)
  return both[: len(qf)], both[len(qf) :]


def _reid_results(name: str, res: Mapping[str, Any]) -> dict[str, float]:
  keys = ("rank1", "rank5", "rank10", "mAP", "mINP")
  return {f"eval/{name}/{k}": float(res[k]) for k in keys if k in res}


class VideoReidEvaluator(_Evaluator):
  """Tracklet retrieval: query tracklets against gallery tracklets."""

  FIELDS = {"metric": "cosine"}

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    from idlearn.evaluators import reid

    del picture_dir  # per-frame pictures are not drawn for tracklets
    q, g = self.data()
    if "tracklet" not in q:
      raise ConfigError(
        f"config.evals.{self.name}: type video_reid needs a video data set "
        f"(records with a tracklet), got {self.cfg['data']!r}"
      )
    qf, qi, qc = pool_tracklets(self.features(state, q["image"]), q)
    gf, gi, gc = pool_tracklets(self.features(state, g["image"]), g)
    res = reid.evaluate(qf, qi, qc, gf, gi, gc, metric=self.cfg["metric"])
    return _reid_results(self.name, res)


class VerificationEvaluator(_Evaluator):
  """Face verification on the data set's pairs (10-fold protocol)."""

  # att_faces: a seeded balanced list; lfw: pairs.txt
  FIELDS = {"folds": 10, "pairs_per_fold": 60, "pairs_seed": 0}
  _threshold = None

  def info(self) -> dict[str, Any]:
    """The cosine threshold of the last evaluation (mean over folds)."""
    if self._threshold is None:
      return {}
    return {"threshold": float(self._threshold), "threshold_from": self.name}

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
    feats = self.features(state, images)
    res = verification.evaluate(
      feats[pairs["index1"]],
      feats[pairs["index2"]],
      pairs["same"],
      fold_ids=pairs["fold"],
    )
    self._threshold = res["threshold"]
    return verification.scalars(res, self.name)


class UtilizationEvaluator(_Evaluator):
  """How close the test images come to the training images in feature
  space (`evaluators.utilization`: mean squared distance of unit features
  to the nearest training one; lower = the space is better used)."""

  FIELDS = {"train_split": "train", "test_split": fields.REQUIRED}

  def _load(self):
    from idlearn import data

    kw = dict(image_size=tuple(self.cfg["image_size"]), **self._files())
    name, cfg = self.cfg["data"], self.cfg
    train = data.load_split(name, cfg["train_split"], **kw)["image"]
    return train, data.load_split(name, cfg["test_split"], **kw)["image"]

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    from idlearn.evaluators import utilization

    del picture_dir
    train, test = self.data()
    u = utilization.utilization(
      self.features(state, test), self.features(state, train)
    )
    return {f"eval/{self.name}/utilization": u}


class EffectiveRankEvaluator(_Evaluator):
  """Dimensional collapse of the feature on one split
  (`evaluators.effective_rank`: exp of the entropy of the normalised
  singular values of the centred features; 1 = one direction, d = all),
  of the features as they are and of their unit rows (cosine retrieval)."""

  FIELDS = {"split": fields.REQUIRED}

  def _load(self):
    from idlearn import data

    return data.load_split(
      self.cfg["data"],
      self.cfg["split"],
      image_size=tuple(self.cfg["image_size"]),
      **self._files(),
    )["image"]

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    from idlearn.evaluators.effective_rank import effective_rank

    del picture_dir
    feats = self.features(state, self.data())
    return {
      f"eval/{self.name}/effective_rank": effective_rank(feats),
      f"eval/{self.name}/effective_rank_unit": effective_rank(
        feats, normalize=True
      ),
    }


class EquivarianceEvaluator(_Evaluator):
  """How much of the augmentation the representation keeps
  (`evaluators.equivariance`, SIE's R^2): two views of each image of one
  split, made with `views` (`augment.make_views`, parameters kept), are
  embedded ("emb": the encoder's pooled representation, whatever
  `feature` says; no flip test); a ridge probe predicts their relative
  parameters (`augment.relative_params` of `transforms`) from the two
  views' features concatenated, fitted on the pairs of half the
  identities (the penalty cross-validated over them) and scored (R^2) on
  the others. The views are made `batch_size` images at a time (the
  training batch: BSS draws per batch). Reported for the whole
  representation ("all") and, with `equi_dims` > 0, for its first
  d - equi_dims ("inv") and last equi_dims ("equi") dimensions, each as
  the mean over the transforms and per transform ("r2_equi/flip").

  The views are rounded to uint8 to go through the run's feature function
  (its sharding and compilation): at most 0.5/255 per pixel.
  """

  FIELDS = {
    "split": fields.REQUIRED,
    "views": {},  # an augment.make_views spec (both views)
    "transforms": (),  # augment.PARAM_NAMES to predict; (): all that vary
    "equi_dims": 0,  # the last dims are the equivariant part; 0: none
    "pairs_per_image": 4,
    # the probe's penalties (on standardised features), one chosen per
    # transform by cross-validation over the fit identities
    "ridge": (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3),
    "pairs_seed": 0,  # the views and the fit / test split of identities
  }

  def __init__(self, name: str, cfg: Mapping[str, Any], features: Any):
    from idlearn import augment

    super().__init__(name, cfg, features)
    bad = [t for t in cfg["transforms"] if t not in augment.PARAM_NAMES]
    if bad:
      raise ConfigError(
        f"config.evals.{name}.transforms = {tuple(cfg['transforms'])}: "
        f"{bad} unknown; expected some of {list(augment.PARAM_NAMES)}"
      )
    ridge = cfg["ridge"]
    if cfg["pairs_per_image"] < 1 or not ridge or min(ridge) <= 0:
      raise ConfigError(
        f"config.evals.{name}: pairs_per_image = {cfg['pairs_per_image']} "
        f"(expected >= 1), ridge = {cfg['ridge']} (expected values > 0)"
      )

  def _load(self):
    from idlearn import data
    from idlearn.evaluators.equivariance import view_pairs

    cfg = self.cfg
    split = data.load_split(
      cfg["data"],
      cfg["split"],
      image_size=tuple(cfg["image_size"]),
      **self._files(),
    )
    return view_pairs(
      split["image"],
      split["id"],
      dict(cfg["views"]),
      tuple(cfg["transforms"]),
      pairs_per_image=cfg["pairs_per_image"],
      seed=cfg["pairs_seed"],
      chunk=cfg["batch_size"],
      where=f"config.evals.{self.name}",
    )

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    from idlearn.evaluators.equivariance import pair_r2

    del picture_dir
    pairs, cfg = self.data(), self.cfg
    if not pairs["names"]:
      return {}

    def emb(views):
      return self._features(
        state,
        views,
        image_size=views.shape[1:3],
        batch_size=cfg["batch_size"],
        use_ema=cfg["use_ema"],
        flip=False,
      )["emb"]

    f1, f2 = emb(pairs["view1"]), emb(pairs["view2"])
    d, e = f1.shape[1], cfg["equi_dims"]
    if not 0 <= e < d:
      raise ConfigError(
        f"config.evals.{self.name}.equi_dims = {e}: expected 0 <= it < "
        f"{d}, the representation's width"
      )
    parts = {"all": slice(None)}
    if e:
      parts.update(inv=slice(0, d - e), equi=slice(d - e, d))
    out = {}
    for part, cols in parts.items():
      r2 = pair_r2(
        f1[:, cols],
        f2[:, cols],
        pairs["targets"],
        pairs["fit"],
        groups=pairs["ids"],
        alphas=cfg["ridge"],
      )
      key = f"eval/{self.name}/r2_{part}"
      ok = np.isfinite(r2)  # NaN: a target constant on the test pairs
      if ok.any():
        out[key] = float(r2[ok].mean())
      for t, v, o in zip(pairs["names"], r2, ok, strict=True):
        if o:
          out[f"{key}/{t}"] = float(v)
    return out


class NamingEvaluator(_Evaluator):
  """Face naming (`evaluators.naming`) on the held-out image-caption
  groups of a split (`data.secla_groups`; `groups`: the fields the run's
  miner makes its groups with), and with `transductive` on its training
  groups too (the official protocol names the training pairs, under
  "eval/<name>/train/"). The method gives the face and name embeddings
  from the encoder's "emb" (no flip test) through its
  `naming_embeddings(params, emb)`."""

  FIELDS = {"split": "train", "groups": {}, "transductive": True}

  def __init__(self, name: str, cfg: Mapping[str, Any], features: Any):
    from idlearn.data import secla_groups

    super().__init__(name, cfg, features)
    if cfg["flip_test"]:
      raise ConfigError(
        f"config.evals.{name}.flip_test = True: naming compares the "
        "projected feature of each image; set it False"
      )
    secla_groups.resolve(cfg["groups"], f"config.evals.{name}.groups")

  def _load(self):
    from idlearn import data
    from idlearn.data import secla_groups

    split = data.load_split(
      self.cfg["data"],
      self.cfg["split"],
      image_size=tuple(self.cfg["image_size"]),
      **self._files(),
    )
    where = f"config.evals.{self.name}.groups"
    groups = secla_groups.build(split["label"], self.cfg["groups"], where)
    return split["image"], groups

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    from idlearn.evaluators import naming

    del picture_dir
    method = self._features.method
    embed = getattr(method, "naming_embeddings", None)
    if embed is None:
      raise ConfigError(
        f"config.evals.{self.name}: type naming needs a method that "
        f"embeds names; config.method.name = {method.name!r} does not"
      )
    images, (train, test) = self.data()
    emb = self._features(
      state,
      images,
      image_size=tuple(self.cfg["image_size"]),
      batch_size=self.cfg["batch_size"],
      use_ema=self.cfg["use_ema"],
    )["emb"]
    params = state.ema_params if self.cfg["use_ema"] else state.params
    faces, names = embed(params, emb)
    sets = {"": test}
    if self.cfg["transductive"]:
      sets["train/"] = train
    out = {}
    for prefix, g in sets.items():
      res = naming.evaluate(faces, names, g.faces, g.names, g.truth)
      for k, v in res.items():
        if np.isfinite(v):  # noname_accuracy of groups without NONAME
          out[f"eval/{self.name}/{prefix}{k}"] = v
    return out


class CodeProbeEvaluator(_Evaluator):
  """How much identity a linear probe recovers from each code of the
  network (`evaluators.ridge_probe`: a ridge classifier, float64).

  Rows: the images of `splits` (concatenated; id -1 dropped), at most
  `max_per_group` evenly spaced ones per group, labelled by identity. An
  identity's groups ("tracklet": a video set's tracklets; "image": each
  image) alternate between fit and test (`ridge_probe.alternate_groups`),
  so the probe names new tracklets of identities it was fitted on; its
  penalty is cross-validated over the fit groups. The codes are the
  method's `probe_codes(params, feats)` ({name: [n, d]} from the
  retrieval encoder's {"emb", "eval"}: e.g. a decoupled identity and
  motion code), else "eval" and "emb". Reported per code as
  "eval/<name>/<code>/top1", with "eval/<name>/chance" (the majority
  label). No flip test: a code of the mean feature of an image and its
  mirror is not the mean of their codes."""

  FIELDS = {
    "splits": ("query", "gallery"),
    "group_by": "tracklet",  # tracklet | image
    "max_per_group": 16,  # 0: every image of a group
    "ridge": (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0),
    "folds": 2,
  }

  def __init__(self, name: str, cfg: Mapping[str, Any], features: Any):
    super().__init__(name, cfg, features)
    where = f"config.evals.{name}"
    fields.choice(cfg["group_by"], ("tracklet", "image"), f"{where}.group_by")
    if cfg["flip_test"]:
      raise ConfigError(
        f"{where}.flip_test = True: the probe reads each image's own "
        "codes; set it False"
      )
    if not cfg["splits"] or cfg["max_per_group"] < 0 or cfg["folds"] < 2:
      raise ConfigError(
        f"{where}: splits = {tuple(cfg['splits'])} (expected some), "
        f"max_per_group = {cfg['max_per_group']} (>= 0), folds = "
        f"{cfg['folds']} (>= 2)"
      )

  def _load(self):
    from idlearn import data

    images, ids, groups = [], [], []
    for i, split in enumerate(self.cfg["splits"]):
      d = data.load_split(
        self.cfg["data"],
        split,
        image_size=tuple(self.cfg["image_size"]),
        **self._files(),
      )
      if self.cfg["group_by"] == "tracklet":
        if "tracklet" not in d:
          raise ConfigError(
            f"config.evals.{self.name}.group_by = 'tracklet' needs a video "
            f"set, got {self.cfg['data']!r}"
          )
        g = d["tracklet"].astype(np.int64)
      else:
        g = np.arange(len(d["id"]), dtype=np.int64)
      keep = _spaced(g, self.cfg["max_per_group"]) & (d["id"] != -1)
      images.append(d["image"][keep])
      ids.append(d["id"][keep])
      groups.append(g[keep] + (i << 32))  # groups of each split apart
    return np.concatenate(images), np.concatenate(ids), np.concatenate(groups)

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    from idlearn.evaluators import ridge_probe

    del picture_dir
    images, ids, groups = self.data()
    feats = self._features(
      state,
      images,
      image_size=tuple(self.cfg["image_size"]),
      batch_size=self.cfg["batch_size"],
      use_ema=self.cfg["use_ema"],
    )
    codes = {"eval": feats["eval"], "emb": feats["emb"]}
    hook = getattr(self._features.method, "probe_codes", None)
    if hook is not None:
      params = state.ema_params if self.cfg["use_ema"] else state.params
      codes = hook(params, feats)
    fit = ridge_probe.alternate_groups(ids, groups)
    out = {}
    for code, x in sorted(codes.items()):
      res = ridge_probe.evaluate(
        x[fit], ids[fit], x[~fit], ids[~fit], groups=groups[fit],
        alphas=self.cfg["ridge"], folds=self.cfg["folds"],
      )  # fmt: skip
      out[f"eval/{self.name}/{code}/top1"] = res["top1"]
      out[f"eval/{self.name}/chance"] = res["chance"]
    return out


def _spaced(groups: np.ndarray, most: int) -> np.ndarray:
  """bool [n]: at most `most` evenly spaced rows of each group (0: all),
  in record order."""
  keep = np.ones(len(groups), bool)
  if most <= 0:
    return keep
  _, inverse, counts = np.unique(groups, return_inverse=True,
                                 return_counts=True)  # fmt: skip
  for g in np.flatnonzero(counts > most):
    rows = np.flatnonzero(inverse == g)
    keep[rows] = False
    keep[rows[np.linspace(0, len(rows) - 1, most).round().astype(int)]] = True
  return keep


TYPES = {
  "reid": ReidEvaluator,
  "video_reid": VideoReidEvaluator,
  "verification": VerificationEvaluator,
  "utilization": UtilizationEvaluator,
  "effective_rank": EffectiveRankEvaluator,
  "equivariance": EquivarianceEvaluator,
  "naming": NamingEvaluator,
  "code_probe": CodeProbeEvaluator,
}


def make_evaluators(config: Mapping[str, Any] | None, features: Any) -> list:
  """config.evals ({name: fields}) -> evaluators with `.run(state)`.

  Each type accepts the common fields plus its own (a reid evaluator
  rejects `folds`).
  """
  out = []
  for name, group in sorted(dict(config or {}).items()):
    where = f"config.evals.{name}"
    kind = fields.choice(group.get("type", "reid"), TYPES, f"{where}.type")
    cls = TYPES[kind]
    cfg = fields.resolve(group, {**COMMON_FIELDS, **cls.FIELDS}, where)
    out.append(cls(name, cfg, features))
  return out

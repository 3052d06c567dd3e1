"""Periodic evaluation of the train state through `idlearn.evaluators`."""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from idlearn.training import fields, sharding
from idlearn.training import step as step_lib

FIELDS = {
  "type": "reid",  # reid: CMC / mAP retrieval (Market-1501 protocol)
  "data": fields.REQUIRED,  # an idlearn.data set name
  "image_size": (256, 128),
  "batch_size": 64,
  "log_steps": 0,  # 0: only after the last step
  "feature": "eval",  # model output retrieved with
  "metric": "cosine",
  "use_ema": False,  # evaluate state.ema_params
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


class ReidEvaluator:
  """Re-ID retrieval on a data set's query/gallery protocol.

  Args:
    name: key under which results are logged ("eval/<name>/rank1").
    model: the IdModel being trained.
    cfg: resolved fields (see `FIELDS`).
  """

  def __init__(self, name: str, model: Any, cfg: Mapping[str, Any]):
    self.name, self.model, self.cfg = name, model, cfg
    self.log_steps = cfg["log_steps"]
    self._sets = None

  def _load(self):
    if self._sets is None:
      from idlearn import data

      q, g = data.reid_eval_sets(
        self.cfg["data"], image_size=tuple(self.cfg["image_size"])
      )
      self._sets = (q, g)
    return self._sets

  def run(self, state: Any, picture_dir: str | None = None) -> dict[str, float]:
    """Evaluates `state`; returns {"eval/<name>/rank1": ..., ...}.

    With `picture_dir`, process 0 also writes retrieval_grid.png, cmc.png
    (and failure_cases.png) there, through `idlearn.evaluators.plots`.
    """
    from idlearn.evaluators import reid

    q, g = self._load()
    params = state.ema_params if self.cfg["use_ema"] else state.params
    variables = {"params": params, "batch_stats": state.batch_stats}
    kw = dict(
      size=tuple(self.cfg["image_size"]),
      feature=self.cfg["feature"],
      batch_size=self.cfg["batch_size"],
    )
    qf = extract(self.model, variables, q["image"], **kw)
    gf = qf if g is q else extract(self.model, variables, g["image"], **kw)
    res = reid.evaluate(
      qf, q["id"], q["cam"], gf, g["id"], g["cam"], metric=self.cfg["metric"]
    )
    if picture_dir is not None and jax.process_index() == 0:
      from idlearn.evaluators import plots

      plots.write_eval_pictures(
        picture_dir, q, g, qf, gf, cmc=res["cmc"], metric=self.cfg["metric"]
      )
    keys = ("rank1", "rank5", "rank10", "mAP", "mINP")
    return {f"eval/{self.name}/{k}": float(res[k]) for k in keys if k in res}


_TYPES = {"reid": ReidEvaluator}


def make_evaluators(config: Mapping[str, Any] | None, model: Any) -> list:
  """config.evals ({name: fields}) -> evaluators with `.run(state)`."""
  out = []
  for name, group in sorted(dict(config or {}).items()):
    cfg = fields.resolve(group, FIELDS, f"config.evals.{name}")
    kind = fields.choice(cfg["type"], _TYPES, f"config.evals.{name}.type")
    out.append(_TYPES[kind](name, model, cfg))
  return out

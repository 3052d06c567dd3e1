r"""Retrieval-time options on a trained model: re-ranking, centralization.

Evaluates the quickstart model (trains it first if WORKDIR has no
checkpoint) on the 12 held-out PKU-Reid identities, Market-1501 protocol,
with plain cosine retrieval, k-reciprocal re-ranking (Zhong et al. 2017)
and neighbour feature centralization (Pose2ID), and prints a table.

  python benchmarks/retrieval_options.py --workdir=runs/quickstart
"""

import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags

sys.path.insert(0, os.getcwd())  # configs/ live in the repository

from configs import quickstart  # noqa: E402
from idlearn import augment, data, main  # noqa: E402
from idlearn.evaluators import centralization, reid, reranking  # noqa: E402
from idlearn.training import model as model_lib  # noqa: E402

FLAGS = flags.FLAGS  # --workdir is idlearn.main's flag


def _features(config, workdir):
  ckpts = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpts) or not any(
    s.isdigit() for s in os.listdir(ckpts)
  ):
    main.run(config, workdir)
  step = max(int(s) for s in os.listdir(ckpts) if s.isdigit())
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(
      os.path.abspath(os.path.join(ckpts, str(step), "state"))
    )
  classes = state["params"]["classifier"]["kernel"].shape[-1]
  model = model_lib.make_model(config.model, num_classes=classes)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  size = tuple(config.evals.pku_reid.image_size)
  query, _ = data.reid_eval_sets("pku_reid", image_size=size)
  embed = jax.jit(
    lambda x: model.apply(variables, augment.preprocess(x, size))["eval"]
  )
  feats = np.concatenate(
    [embed(query["image"][i : i + 64]) for i in range(0, len(query["id"]), 64)]
  )
  return feats, query["id"], query["cam"]


def main_(argv):
  del argv
  feats, ids, cams = _features(
    quickstart.get_config(), FLAGS.workdir or "runs/quickstart"
  )
  rows = [("cosine", reid.evaluate(feats, ids, cams, feats, ids, cams))]
  dist = reranking.rerank(feats, feats, metric="cosine")
  rows.append(
    ("k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)",
     reid.evaluate_distances(dist, ids, cams, ids, cams))
  )  # fmt: skip
  for k in (2, 3):
    f = centralization.centralize(feats, k1=k, k2=k)
    rows.append(
      (f"feature centralization (k1=k2={k})",
       reid.evaluate(f, ids, cams, f, ids, cams))
    )  # fmt: skip
  print(f"{'retrieval':<52} rank-1    mAP")
  for name, r in rows:
    print(f"{name:<52} {100 * r['rank1']:6.1f} {100 * r['mAP']:6.1f}")


if __name__ == "__main__":
  app.run(main_)

r"""Retrieval-time options on a trained model: re-ranking, centralization.

Evaluates the quickstart model (trains it first if WORKDIR has no
checkpoint) on the 12 held-out PKU-Reid identities, Market-1501 protocol,
with plain cosine retrieval, k-reciprocal re-ranking (Zhong et al. 2017)
and neighbour feature centralization (Pose2ID), and prints a table.

  python benchmarks/retrieval_options.py --workdir=runs/quickstart
"""

import argparse
import os
import sys

sys.path.insert(0, os.getcwd())  # configs/ live in the repository

import idlearn  # noqa: E402
from configs import quickstart  # noqa: E402
from idlearn import data, main  # noqa: E402
from idlearn.evaluators import centralization, reid, reranking  # noqa: E402


def _features(workdir):
  """Unit features of the held-out PKU-Reid images from the latest
  checkpoint of `workdir` (the quickstart, trained first if absent)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    main.run(quickstart.get_config(), workdir)
  embedder = idlearn.load(workdir)
  query, _ = data.reid_eval_sets("pku_reid", image_size=embedder.image_size)
  return embedder.embed(query["image"]), query["id"], query["cam"]


def main_():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", default="runs/quickstart")
  feats, ids, cams = _features(p.parse_args().workdir)
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
  main_()

"""Objectives: pure functions of embeddings returning (loss, aux).

Every loss returns a float32 scalar mean over the global batch and a flat
dict of scalar diagnostics; hyper-parameters are keyword-only; losses that
take `axis_name` run inside `shard_map` (see idlearn.training.sharding) and
give the single-device result on the concatenated batch.
"""

from idlearn.losses.contrastive import dcl, dclw, decoupled_softmax, info_nce
from idlearn.losses.margin import arcface, cosface
from idlearn.losses.metric import triplet
from idlearn.losses.redundancy import barlow_twins

__all__ = [
  "arcface",
  "barlow_twins",
  "cosface",
  "dcl",
  "dclw",
  "decoupled_softmax",
  "info_nce",
  "triplet",
]

# Seed-method objectives (added by their module owners below).

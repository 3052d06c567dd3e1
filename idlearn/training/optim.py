"""Optimizers (SGD-momentum, AdamW, LARS), schedules and clipping."""

from collections.abc import Mapping
from typing import Any

import jax
import optax

from idlearn import fields

PyTree = Any

FIELDS = {
  "name": "sgd",  # sgd | adamw | lars
  "lr": 0.1,  # peak learning rate, reached after warmup
  "weight_decay": 0.0,  # on weight matrices / kernels only (see decay_mask)
  "momentum": 0.9,  # sgd / lars
  "nesterov": False,
  "b1": 0.9,  # adamw
  "b2": 0.999,
  "eps": 1e-8,
  "trust_coefficient": 1e-3,  # lars
  "schedule": "cosine",  # cosine | constant
  "warmup_steps": 0,
  "end_lr_factor": 0.0,  # final lr = lr * end_lr_factor
  "clip_norm": 0.0,  # global gradient-norm clip; 0 = off
}


def decay_mask(params: PyTree) -> PyTree:
  """True for kernels and embeddings, False for biases and norm parameters.

  Biases, BatchNorm/LayerNorm scales and offsets are all 1-D; the LARS paper
  and its SSL users (SimCLR, BYOL) exclude them from decay and adaptation.
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_schedule(cfg: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then cosine to `lr * end_lr_factor` (or constant)."""
  lr, warmup = cfg["lr"], cfg["warmup_steps"]
  if cfg["schedule"] == "constant":
    if warmup == 0:
      return optax.constant_schedule(lr)
    return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)],
      [warmup],
    )
  fields.choice(
    cfg["schedule"], ["cosine", "constant"], "config.optim.schedule"
  )
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=lr,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=lr * cfg["end_lr_factor"],
  )


def make_optimizer(
  config: Mapping[str, Any] | None, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """config.optim -> (optax transformation, learning-rate schedule).

  Args:
    config: the `config.optim` group (fields in `FIELDS`).
    total_steps: length of the run (the cosine decays over it).
  Returns:
    (tx, schedule); `tx` clips first when `clip_norm > 0`.
  """
  cfg = fields.resolve(config, FIELDS, "config.optim")
  sched = make_schedule(cfg, total_steps)
  name = cfg["name"]
  wd = cfg["weight_decay"]
  if name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(wd, mask=decay_mask),
      optax.sgd(sched, momentum=cfg["momentum"], nesterov=cfg["nesterov"]),
    )
  elif name == "adamw":
    tx = optax.adamw(
      sched,
      b1=cfg["b1"],
      b2=cfg["b2"],
      eps=cfg["eps"],
      weight_decay=wd,
      mask=decay_mask,
    )
  elif name == "lars":
    tx = optax.lars(
      sched,
      weight_decay=wd,
      weight_decay_mask=decay_mask,
      trust_coefficient=cfg["trust_coefficient"],
      eps=0.0,
      trust_ratio_mask=decay_mask,
      momentum=cfg["momentum"],
      nesterov=cfg["nesterov"],
    )
  else:
    fields.choice(name, ["sgd", "adamw", "lars"], "config.optim.name")
  if cfg["clip_norm"] > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg["clip_norm"]), tx)
  return tx, sched

"""Training methods, one module each, behind one protocol (`base.Method`).

`make_method(config.method, setup, miner)` builds the method named by
`config.method.name`; `make_miner(config.miner, setup)` its miner. Adding a
method is one module here (with `METHODS` and, if it mines, `MINERS`), one
config and its tests: the loop, the step and the inputs do not change.

| name | module | what |
|---|---|---|
| supervised, facenet | supervised | triplet + identity CE, BNNeck; FaceNet |
| arcface, cosface | margin | additive-margin softmax on class centres |
| simclr, dcl, dclw | contrastive | two-view contrastive SSL |
| barlow_twins, mixed_barlow_twins | barlow_twins | redundancy reduction |
| isr | isr | matched positives, reliability weights |
| dino, cion | dino | self-distillation with an EMA teacher |
| domainmix | domainmix | source labels + target pseudo labels |
| cacl | cacl | camera-driven curriculum + camera-diversity loss (UDA) |
| decoupled_mixup | decoupled_mixup | supervised + (decoupled) mixup CE |
| metrix | metrix | metric loss with mixed examples and targets |
| mmt | mmt | mutual mean teaching on k-means pseudo labels (+ WaveBlock) |
| hydra | hydra | gated contrastive loss on (arbitrary) pairs of classes |
| lde | lde | decoupled identity / domain features, domain expansion (DG) |
| fsfm | fsfm | masked image modelling (CRFR-P) + EMA self-distillation |
| sie | sie | split invariant / equivariant VICReg, hypernetwork predictor |
| secla | secla | face naming from image-caption groups (SECLA, SECLA-B) |
| anitalker | anitalker | identity / motion codes, decoder, CLUB MI bound |
"""

from collections.abc import Mapping
from typing import Any

from idlearn import fields
from idlearn.methods import (
  anitalker,
  barlow_twins,
  cacl,
  contrastive,
  decoupled_mixup,
  dino,
  domainmix,
  fsfm,
  hydra,
  isr,
  lde,
  margin,
  metrix,
  mmt,
  secla,
  sie,
  supervised,
)
from idlearn.methods.base import (
  Context,
  Method,
  Miner,
  Network,
  Setup,
  make_loader,
)

_MODULES = (
  supervised,
  margin,
  contrastive,
  barlow_twins,
  isr,
  dino,
  domainmix,
  cacl,
  decoupled_mixup,
  metrix,
  hydra,
  mmt,
  lde,
  fsfm,
  sie,
  secla,
  anitalker,
)
# Plain dicts filled here (no import side effects elsewhere).
METHODS: dict[str, type[Method]] = {
  name: cls for m in _MODULES for cls in m.METHODS for name in cls.NAMES
}
MINERS: dict[str, type[Miner]] = {
  cls.NAME: cls for m in _MODULES for cls in getattr(m, "MINERS", ())
}

__all__ = [
  "METHODS",
  "MINERS",
  "Context",
  "Method",
  "Miner",
  "Network",
  "Setup",
  "make_loader",
  "make_method",
  "make_miner",
]


def _name(group: Mapping[str, Any] | None, registry, where: str) -> str:
  name = dict(group or {}).get("name", "")
  return fields.choice(name, registry, f"{where}.name")


def make_miner(config: Mapping[str, Any] | None, setup: Setup) -> Miner | None:
  """config.miner -> its `Miner` (None when the group is empty)."""
  if not config:
    return None
  name = _name(config, MINERS, "config.miner")
  cls = MINERS[name]
  cfg = fields.resolve(config, {"name": name, **cls.FIELDS}, "config.miner")
  return cls(cfg, setup)


def make_method(
  config: Mapping[str, Any] | None,
  setup: Setup,
  miner: Miner | None = None,
) -> Method:
  """config.method -> the `Method` it names, its config checked.

  Raises:
    ValueError: an unknown name or field, a mistyped value, or a config the
      method cannot train with (missing views or miner, inconsistent
      fields); the message names the field.
  """
  name = _name(config, METHODS, "config.method")
  cls = METHODS[name]
  cfg = fields.resolve(config, {"name": name, **cls.FIELDS}, "config.method")
  return cls(name, cfg, setup, miner)

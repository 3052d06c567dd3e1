"""Encoders: [n, h, w, 3] images -> ([n, d] embeddings, aux dict).

All are flax.linen modules called as `model.apply(variables, images,
train=...)`; batch statistics (where a model has them) live in the
"batch_stats" collection. Build them by name:

  model = encoders.get_encoder("resnet50", last_stride=1, pooling="gem")
  variables = model.init(rng, images, train=False)
  (emb, aux), upd = model.apply(variables, images, train=True,
                                mutable=["batch_stats"])
  model.feature_dim  # d
"""

from typing import Any

import flax.linen as nn

from idlearn.encoders import osnet, resnet, vit
from idlearn.encoders.backbone import NECKS, Backbone, backbone
from idlearn.encoders.conv import GeM, conv2d

__all__ = [
  "NECKS",
  "Backbone",
  "GeM",
  "backbone",
  "conv2d",
  "feature_dim",
  "get_encoder",
  "names",
]

# name -> (module class, fixed kwargs). A plain dict, filled at import.
_REGISTRY: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {}
for _name, _kw in resnet.VARIANTS.items():
  _REGISTRY[_name] = (resnet.ResNet, _kw)
for _name, _kw in osnet.VARIANTS.items():
  _REGISTRY[_name] = (osnet.OSNet, _kw)
for _name, _kw in vit.VARIANTS.items():
  _REGISTRY[_name] = (vit.ViT, _kw)


def names() -> list[str]:
  """Registered encoder names."""
  return sorted(_REGISTRY)


def get_encoder(name: str, **kw: Any) -> nn.Module:
  """Builds the encoder `name` (see `names()`).

  Args:
    name: e.g. "resnet50", "osnet_x1_0", "vit_s16", "resnet_tiny".
    **kw: module attributes, e.g. last_stride=1, pooling="gem",
      dtype=jnp.bfloat16 (compute; params stay float32), img_size=(256, 128)
      for ViTs.
  Returns:
    An unbound flax module with a `feature_dim` attribute.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown encoder name {name!r}; known: {names()}")
  cls, fixed = _REGISTRY[name]
  fields = set(cls.__dataclass_fields__) - {"parent", "name"}
  unknown = set(kw) - fields
  if unknown:
    raise ValueError(
      f"unknown argument(s) {sorted(unknown)} for encoder {name!r}; "
      f"accepted: {sorted(fields)}"
    )
  return cls(**{**fixed, **kw})


def feature_dim(name: str, **kw: Any) -> int:
  """Embedding dimension d of `get_encoder(name, **kw)`."""
  return get_encoder(name, **kw).feature_dim

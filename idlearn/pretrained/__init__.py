"""Pretrained encoders: PyTorch weight import and encoder folders."""

from idlearn.pretrained.checkpoint import (
  is_encoder_folder,
  load,
  read_spec,
  save,
)
from idlearn.pretrained.torch_import import from_torch, resize_pos_embed

__all__ = [
  "from_torch",
  "is_encoder_folder",
  "load",
  "read_spec",
  "resize_pos_embed",
  "save",
]

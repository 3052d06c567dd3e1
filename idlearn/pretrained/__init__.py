"""Pretrained encoders: PyTorch weight import and Orbax checkpoints."""

from idlearn.pretrained.checkpoint import load, save
from idlearn.pretrained.torch_import import from_torch, resize_pos_embed

__all__ = ["from_torch", "load", "resize_pos_embed", "save"]

"""Jittable multi-view image augmentations (run on device inside the step).

`make_views(rng, images, specs)` for training views, `preprocess(images,
size)` for evaluation. Imports nothing from the rest of idlearn.
"""

from idlearn.augment.ops import IMAGENET_MEAN, IMAGENET_STD
from idlearn.augment.style import standardize_styles
from idlearn.augment.views import make_views, normalize, preprocess

__all__ = [
  "IMAGENET_MEAN",
  "IMAGENET_STD",
  "make_views",
  "normalize",
  "preprocess",
  "standardize_styles",
]

"""Jittable multi-view image augmentations (run on device inside the step).

`make_views(rng, images, specs)` for training views (with
`with_params=True`, also the parameters each view drew: `PARAM_NAMES`,
`relative_params`), `preprocess(images, size)` for evaluation. Imports
nothing from the rest of idlearn.
"""

from idlearn.augment.ops import IMAGENET_MEAN, IMAGENET_STD
from idlearn.augment.style import standardize_styles
from idlearn.augment.views import (
  PARAM_NAMES,
  make_views,
  normalize,
  params_role,
  preprocess,
  relative_params,
)

__all__ = [
  "IMAGENET_MEAN",
  "IMAGENET_STD",
  "PARAM_NAMES",
  "make_views",
  "normalize",
  "params_role",
  "preprocess",
  "relative_params",
  "standardize_styles",
]

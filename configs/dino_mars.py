r"""DINO self-distillation on MARS mini: configs/cion_mars.py without the
identity correlation (each image distils only from its own crops, K = 1),
the baseline CION is measured against.

  python -m idlearn.main --config=configs/dino_mars.py --workdir=runs/dino
  python -m idlearn.main --config=configs/dino_mars.py:smoke --workdir=/tmp/s

Arg keys: as configs/cion_mars.py.
"""

import ml_collections

from configs import cion_mars


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = cion_mars.get_config(arg)
  c.method.name = "dino"
  del c.method["instances"], c.method["instance_steps"]
  return c

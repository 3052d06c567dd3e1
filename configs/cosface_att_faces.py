r"""CosFace on AT&T faces: configs/facenet_att_faces.py with loss=cosface.

  python -m idlearn.main --config=configs/cosface_att_faces.py \
      --workdir=runs/cosface_att_faces
  python -m idlearn.main --config=configs/cosface_att_faces.py:smoke \
      --workdir=/tmp/smoke

Arg keys: as configs/facenet_att_faces.py (loss is fixed here).
"""

import ml_collections

from configs import facenet_att_faces


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return facenet_att_faces.get_config(
    f"loss=cosface,{arg}" if arg else "loss=cosface"
  )

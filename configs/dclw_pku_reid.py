r"""DCLW on PKU-Reid: DCL with the positive term weighted by a von
Mises-Fisher weight (sigma 0.5; Yeh et al., 2022); everything else as
configs/simclr_pku_reid.py (same arg keys).

  python -m idlearn.main --config=configs/dclw_pku_reid.py \
      --workdir=runs/dclw_pku_reid
  python -m idlearn.main --config=configs/dclw_pku_reid.py:batch=32 \
      --workdir=runs/dclw_pku_reid_b32

Expect: measured numbers in experiments/ssl_pku_reid/README.md.
"""

import ml_collections

from configs import simclr_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return simclr_pku_reid.get_config(f"loss=dclw,{arg}" if arg else "loss=dclw")

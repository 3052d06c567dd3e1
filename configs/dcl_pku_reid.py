r"""DCL (decoupled contrastive loss) on PKU-Reid: SimCLR with the positive
removed from the denominator (Yeh et al., 2022); everything else as
configs/simclr_pku_reid.py (same arg keys).

  python -m idlearn.main --config=configs/dcl_pku_reid.py \
      --workdir=runs/dcl_pku_reid
  python -m idlearn.main --config=configs/dcl_pku_reid.py:batch=32 \
      --workdir=runs/dcl_pku_reid_b32

Expect: measured numbers in experiments/ssl_pku_reid/README.md.
"""

import ml_collections

from configs import simclr_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return simclr_pku_reid.get_config(f"loss=dcl,{arg}" if arg else "loss=dcl")

r"""DCL (decoupled contrastive loss) on PKU-Reid: SimCLR with the positive
removed from the denominator (Yeh et al., 2022); everything else as
configs/simclr_pku_reid.py.

  python -m idlearn.main --config=configs/dcl_pku_reid.py \
      --workdir=runs/dcl_pku_reid
  python -m idlearn.main --config=configs/dcl_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Expect: like SimCLR here, no better than the untrained encoder (a PyTorch
peer measured 7.3 / 12.6 rank-1 / mAP after 40 epochs).
"""

import ml_collections

from configs import simclr_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = simclr_pku_reid.get_config(arg)
  c.loss = dict(name="dcl", on="proj", temperature=0.1)
  return c

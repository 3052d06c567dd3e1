r"""Decoupled Mixup on AT&T faces: the re-ID recipe on faces plus a mixed
view, against no mixing and plain mixup.

configs/facenet_att_faces.py with loss=triplet_ce (quarter-width
ResNet-18 from scratch on subjects s1..s28, 400 steps of P14 x K4,
batch-hard triplet + label-smoothed CE on a BNNeck, verification of the
12 held-out subjects) plus configs/decoupled_mixup_pku_reid.py's mixed
view and decoupled mixup CE (idlearn/methods/decoupled_mixup.py). Arms
(same budget, same seeds):

  for s in 0 1; do
    python -m idlearn.main \
        --config=configs/decoupled_mixup_att_faces.py:alpha=0,seed=$s \
        --workdir=runs/dm_att/base_s$s     # no mixed view
    python -m idlearn.main \
        --config=configs/decoupled_mixup_att_faces.py:eta=0,seed=$s \
        --workdir=runs/dm_att/mixup_s$s    # plain mixup CE
    python -m idlearn.main \
        --config=configs/decoupled_mixup_att_faces.py:seed=$s \
        --workdir=runs/dm_att/dm_s$s       # mixup + DM (eta 0.1)
  done
  python -m idlearn.main --config=configs/decoupled_mixup_att_faces.py:smoke \
      --workdir=/tmp/smoke

Arg keys: alpha, eta, eta_mode, steps, aug, seed, smoke (the others as
configs/decoupled_mixup_pku_reid.py's). Measured numbers:
experiments/decoupled_mixup/README.md.
"""

import ml_collections

from configs import common, facenet_att_faces


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, alpha=1.0, eta=0.1, eta_mode="both", steps=400, aug="light",
    seed=0, smoke=False,
  )  # fmt: skip
  base = f"loss=triplet_ce,steps={arg.steps},aug={arg.aug},seed={arg.seed}"
  c = facenet_att_faces.get_config(base + (",smoke" if arg.smoke else ""))
  c.method = dict(
    name="decoupled_mixup", loss="triplet_ce", neck="bnneck", ce_weight=1.0,
    alpha=arg.alpha, eta=arg.eta, eta_mode=arg.eta_mode, lam_power=1.0,
    mix_weight=1.0,
  )  # fmt: skip
  return c

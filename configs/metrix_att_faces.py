r"""Metrix on AT&T faces: configs/facenet_att_faces.py's data, model and
verification with the Metrix objective instead of semi-hard triplets.

Trains on subjects s1..s28 and verifies on the 12 held-out subjects
(600 seeded pairs, 10 folds, flip test), with a 128-d L2-normalised
embedding trained by Metrix (Venkataramanan et al., ICLR 2022; official
settings: contrastive loss, margin 0.5, lam ~ Beta(2, 2) per batch,
mixed-loss weight 0.4; see idlearn/methods/metrix.py). Also reports the
paper's utilization (eval/utilization/utilization, held-out subjects vs
the training images). Arms (same budget, same seeds):

  python -m idlearn.main \
      --config=configs/metrix_att_faces.py:mix=none,seed=0 \
      --workdir=runs/metrix_att_faces/none_s0
  python -m idlearn.main \
      --config=configs/metrix_att_faces.py:seed=0 \
      --workdir=runs/metrix_att_faces/input_s0
  python -m idlearn.main \
      --config=configs/metrix_att_faces.py:smoke \
      --workdir=/tmp/smoke

Repeat each with seed=1, 2 (and mix=embedding). Measured (two seeds):
experiments/metrix/README.md.
Arg keys: mix (none | input | embedding), loss (contrastive |
multi_similarity), mix_alpha, mix_weight, margin, steps, aug (light |
strong), seed, smoke.
"""

import ml_collections

from configs import common, facenet_att_faces


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, mix="input", loss="contrastive", mix_alpha=2.0, mix_weight=0.4,
    margin=0.5, steps=400, aug="light", seed=0, smoke=False,
  )  # fmt: skip
  base = f"steps={arg.steps},aug={arg.aug},seed={arg.seed}"
  c = facenet_att_faces.get_config(base + (",smoke" if arg.smoke else ""))
  c.method = dict(
    name="metrix", loss=arg.loss, mix=arg.mix, mix_alpha=arg.mix_alpha,
    mix_weight=arg.mix_weight, margin=arg.margin, neck="embedding",
    neck_dim=16 if arg.smoke else 128,
  )  # fmt: skip
  size = tuple(c.input.image_size)
  c.evals.utilization = dict(
    type="utilization", data="att_faces", image_size=size, test_split="test"
  )
  return c

r"""Quickstart: supervised re-ID on bundled PKU-Reid in a few CPU minutes.

  pip install -e . && python -m idlearn.main --config=configs/quickstart.py \
      --workdir=runs/quickstart

Trains a ResNet-18 at quarter width (stage widths 16-128, last stride 1)
from scratch on the 62 bundled PKU-Reid training identities for 20 epochs
(P16 x K4 batches; batch-hard triplet + label-smoothed identity CE with a
BNNeck), then evaluates on the 12 held-out identities (every val image a
query against the others, Market-1501 protocol) and prints rank-1 / mAP of
the trained encoder next to the same encoder untrained.

Expect: see experiments/quickstart/README.md for the measured runtime and
numbers on a 2-core CPU.
Arg: same keys as configs/supervised_pku_reid.py (e.g. `:smoke`, `:seed=1`).
"""

import ml_collections

from configs import supervised_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  # A quarter-width ResNet-18: full width runs ~4x slower on XLA:CPU and
  # does not fit the 5-minute budget on 2 cores.
  base = "encoder=resnet18,width=16,epochs=20"
  c = supervised_pku_reid.get_config(f"{base},{arg}" if arg else base)
  if c.total_steps > 10:  # not the smoke variant
    c.log_steps, c.ckpt_steps = 20, 50
  return c

r"""Pretrain -> fine-tune on PKU-Reid (the claim of ISR and CION: a
self-supervised start beats a random one at the same supervised budget).

Stage 1 (`stage=pretrain`): DCL (configs/dcl_pku_reid.py: two re-ID views
with batch style standardisation, quarter-width ResNet-18) on every
unlabelled person image bundled for training: the PKU-Reid train split and
the MARS mini train frames (labels unused), made one image folder through
`config.select` (name "all": the whole pool, no search). Same steps as the
quickstart (310 of batch 64).
`pretrain=isr` makes stage 1 ISR across cameras instead
(configs/isr_pku_reid.py: a training image, its cross-camera partner mined
over the split every epoch, and the instance term; camera ids used,
identity labels not) on the PKU-Reid train split only: its camera-pair
miner pairs the two cameras of one set, and the MARS frames are a second
set with six cameras. Same encoder, image size and steps as DCL's stage.
Stage 2 (`stage=finetune`, the default): the quickstart's supervised
recipe (batch-hard triplet + label-smoothed CE with a BNNeck, 20 epochs of
PKU-Reid) starting from the stage-1 encoder (`init=`), or from scratch
(`init=` empty: the quickstart itself, the baseline arm).

  python -m idlearn.main \
      --config=configs/finetune_pku_reid.py:stage=pretrain,seed=0 \
      --workdir=runs/finetune/pretrain_s0
  python -m idlearn.main --config=configs/finetune_pku_reid.py:seed=0,$(
      )init=runs/finetune/pretrain_s0/encoder/final \
      --workdir=runs/finetune/finetune_s0
  python -m idlearn.main --config=configs/finetune_pku_reid.py:seed=0 \
      --workdir=runs/finetune/scratch_s0           # = configs/quickstart.py
  python -m idlearn.main --config=configs/finetune_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Needs ../shared/data/mars_mini for DCL's stage 1. Arg keys: stage,
pretrain (dcl | isr), init, seed, smoke. Measured numbers in
experiments/finetune/README.md.
"""

import ml_collections

from configs import common, dcl_pku_reid, isr_pku_reid, quickstart


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, stage="finetune", pretrain="dcl", init="", seed=0, smoke=False
  )  # fmt: skip
  if arg.stage not in ("pretrain", "finetune"):
    raise ValueError(f"stage={arg.stage!r}: expected pretrain or finetune")
  if arg.pretrain not in ("dcl", "isr"):
    raise ValueError(f"pretrain={arg.pretrain!r}: expected dcl or isr")
  base = f"seed={arg.seed}" + (",smoke" if arg.smoke else "")
  if arg.stage == "finetune":
    c = quickstart.get_config(base)
    c.model.init = arg.init
    return c
  if arg.pretrain == "isr":
    c = isr_pku_reid.get_config(base)
    if not arg.smoke:
      c.log_steps, c.ckpt_steps = 20, 50
    return c
  c = dcl_pku_reid.get_config(base)
  # The whole bundled training pool as one unlabelled image folder.
  c.select = dict(
    name="all",
    pool=dict(
      pku_reid=f"{common.PKU_REID}/train",
      mars=f"{common.shared('mars_mini')}/bbox_train",
    ),
    target=f"{common.shared('mars_mini')}/bbox_train",
    features=dict(encoder="pixels", image_size=(8, 4)),
  )  # fmt: skip
  c.input = dict(
    name="image_folder", image_size=tuple(c.input.image_size),
    global_batch_size=c.input.global_batch_size, sampler="random",
  )  # fmt: skip
  if not arg.smoke:
    c.log_steps, c.ckpt_steps = 20, 50
  return c

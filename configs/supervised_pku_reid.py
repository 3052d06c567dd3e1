r"""Supervised re-ID on PKU-Reid: batch-hard triplet + identity CE, BNNeck.

The "bag of tricks" recipe (Luo et al., 2019) from scratch: P x K batches,
triplet loss on the pooled embedding, label-smoothed identity cross-entropy
on the BNNeck feature, retrieval with the BNNeck feature. Trains on the 62
bundled PKU-Reid training ids, evaluates on the 12 held-out ids (every val
image a query against the others, Market-1501 protocol).

  python -m idlearn.main --config=configs/supervised_pku_reid.py \
      --workdir=runs/supervised_pku_reid
  python -m idlearn.main --config=configs/supervised_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Arg keys: encoder, width (ResNet stage-1 width; 64 = torchvision), epochs,
height, width_px, p, k, bss (batch style standardisation probability),
seed, smoke. configs/quickstart.py is this recipe on
a 5-minute CPU budget; measured numbers in experiments/quickstart/README.md.
"""

import ml_collections

from configs import common

TRAIN_IMAGES = 992  # pku_reid train split


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, encoder="resnet18", width=64, epochs=40, height=128, width_px=64,
    p=16, k=4, bss=0.0, seed=0, smoke=False,
  )  # fmt: skip
  c = ml_collections.ConfigDict()
  size = (arg.height, arg.width_px)
  batch = arg.p * arg.k
  c.seed = arg.seed
  c.total_steps = arg.epochs * TRAIN_IMAGES // batch
  c.log_steps, c.ckpt_steps, c.keep_ckpts = 10, 100, 2
  c.best_metric, c.best_mode = "", "max"
  c.eval_at_start = True  # print the untrained encoder's numbers too
  c.async_ckpt = True
  c.input = dict(
    name="pku_reid", split="train", image_size=size,
    global_batch_size=batch, sampler="pk", k=arg.k, num_workers=0,
    data_dir="", manual_dir="",
  )  # fmt: skip
  c.views = dict(
    a=dict(size=size, flip=0.5, pad=10 * arg.height // 256, erasing=0.5)
  )
  if arg.bss > 0:  # batch style standardisation (camera colour / light)
    c.views.a.style_standardization = arg.bss
  encoder_kw = {}
  if arg.encoder.startswith("resnet"):  # last stride 1: finer final map
    w = arg.width
    encoder_kw = dict(last_stride=1, widths=(w, 2 * w, 4 * w, 8 * w))
  c.model = dict(
    encoder=arg.encoder, encoder_kw=encoder_kw, head="bnneck",
    num_classes=0, dtype="float32",
  )  # fmt: skip
  c.loss = dict(
    name="triplet_ce", margin=0.3, label_smoothing=0.1, triplet_weight=1.0,
    ce_weight=1.0,
  )  # fmt: skip
  c.optim = dict(
    name="adamw", lr=1e-3, weight_decay=5e-4,
    warmup_steps=c.total_steps // 10, end_lr_factor=0.01, clip_norm=0.0,
  )  # fmt: skip
  c.evals = common.pku_reid_eval(size)
  if arg.smoke:
    c.total_steps, c.log_steps, c.ckpt_steps = 2, 1, 1
    c.input.global_batch_size, c.input.k = 16, 4
    small = (32, 16)
    c.input.image_size = c.evals.pku_reid.image_size = c.views.a.size = small
    c.views.a.pad = 2
    c.model.encoder = "resnet_tiny"
    c.model.encoder_kw = dict(last_stride=1)
    c.optim.warmup_steps = 0
  return c

r"""SimCLR (self-supervised, two views) on PKU-Reid, evaluated on held-out ids.

NT-Xent between two generically augmented views (random resized crop, flip,
colour jitter 0.4 with p=0.8, grayscale 0.2), projection MLP head, labels
unused for training. Same encoder (quarter-width ResNet-18, last stride 1)
and budget (20 epochs) as configs/quickstart.py, evaluated the same way.

  python -m idlearn.main --config=configs/simclr_pku_reid.py \
      --workdir=runs/simclr_pku_reid
  python -m idlearn.main --config=configs/simclr_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Expect: on this tiny set, self-supervision with generic augmentations does
not beat the untrained encoder (a PyTorch peer measured 7.8 / 11.4 rank-1 /
mAP after 40 epochs); measured numbers in experiments/quickstart/README.md.
"""

import ml_collections

from configs import common

TRAIN_IMAGES = 992  # pku_reid train split


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, encoder="resnet18", width=16, epochs=20, height=128, width_px=64,
    batch=64,
    seed=0, smoke=False,
  )  # fmt: skip
  c = ml_collections.ConfigDict()
  size = (arg.height, arg.width_px)
  c.seed = arg.seed
  c.total_steps = arg.epochs * TRAIN_IMAGES // arg.batch
  c.log_steps = 10
  c.ckpt_steps = 100
  c.keep_ckpts = 2
  c.best_metric = ""
  c.best_mode = "max"
  c.eval_at_start = True
  c.async_ckpt = True
  c.input = dict(
    name="pku_reid", split="train", image_size=size,
    global_batch_size=arg.batch, sampler="random", k=4, num_workers=0,
    data_dir="", manual_dir="",
  )  # fmt: skip
  view = dict(
    size=size, crop_scale=(0.3, 1.0), flip=0.5, color_jitter=0.4,
    color_p=0.8, grayscale=0.2,
  )  # fmt: skip
  c.views = dict(a=dict(view), b=dict(view))
  encoder_kw = {}
  if arg.encoder.startswith("resnet"):  # as configs/quickstart.py
    w = arg.width
    encoder_kw = dict(last_stride=1, widths=(w, 2 * w, 4 * w, 8 * w))
  c.model = dict(
    encoder=arg.encoder, encoder_kw=encoder_kw, head="projection",
    proj_hidden=512,
    proj_out=128, proj_layers=2, dtype="float32",
  )  # fmt: skip
  c.loss = dict(name="info_nce", on="proj", temperature=0.1)
  c.optim = dict(
    name="adamw", lr=1e-3, weight_decay=1e-4,
    warmup_steps=c.total_steps // 10, end_lr_factor=0.01, clip_norm=0.0,
  )  # fmt: skip
  c.evals = dict(
    pku_reid=dict(
      type="reid", data="pku_reid", image_size=size, batch_size=64,
      log_steps=0, feature="eval", metric="cosine",
    )
  )  # fmt: skip
  if arg.smoke:
    c.total_steps, c.log_steps, c.ckpt_steps = 2, 1, 1
    c.input.global_batch_size = 16
    small = (32, 16)
    c.input.image_size = c.evals.pku_reid.image_size = small
    c.views.a.size = c.views.b.size = small
    c.model.encoder = "resnet_tiny"
    c.model.encoder_kw = dict(last_stride=1)
    c.model.proj_hidden, c.model.proj_out = 32, 16
    c.optim.warmup_steps = 0
  return c

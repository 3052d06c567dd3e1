r"""SimCLR (self-supervised, two views) on PKU-Reid, evaluated on held-out ids.

NT-Xent between two augmented views, projection MLP head, labels unused
for training; quarter-width ResNet-18 (last stride 1) at 128x64, evaluated
on the 12 held-out identities (Market-1501 protocol) like
configs/quickstart.py.

  python -m idlearn.main --config=configs/simclr_pku_reid.py \
      --workdir=runs/simclr_pku_reid
  python -m idlearn.main --config=configs/simclr_pku_reid.py:views=generic \
      --workdir=runs/simclr_generic
  python -m idlearn.main --config=configs/simclr_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Arg keys: loss (info_nce | dcl | dclw), views (see VIEWS: "reid_bss", the
default, crops like a re-ID detector, keeps colour and standardises the
batch's Fourier style (BSS); "generic" is SimCLR's ImageNet recipe with
colour jitter and grayscale), temperature, epochs, batch, encoder, width,
cam_adv (weight of the camera adversary: a discriminator of the 2 cameras
on the embedding, whose balance loss pushes the camera out of it), seed,
smoke.

Expect: measured numbers and the ablation in
experiments/ssl_pku_reid/README.md (generic views: no better than the
untrained encoder; BSS is what makes the difference).
"""

import ml_collections

from configs import common

TRAIN_IMAGES = 992  # pku_reid train split

# View presets (idlearn.augment.make_views keys) for 128x64 person crops.
VIEWS = {
  # SimCLR's ImageNet recipe: colour distortion, square-ish crops.
  "generic": dict(
    crop_scale=(0.3, 1.0), flip=0.5, color_jitter=0.4, color_p=0.8,
    grayscale=0.2,
  ),
  # Colour is the main cross-camera cue of a person: keep it; crop like a
  # detector would (aspect near the 1:2 box), flip, erase parts.
  "reid": dict(
    crop_scale=(0.4, 1.0), crop_ratio=(0.35, 0.7), flip=0.5, erasing=0.5,
  ),
  # As "reid", plus brightness / contrast only (hue and saturation kept).
  "reid_light": dict(
    crop_scale=(0.4, 1.0), crop_ratio=(0.35, 0.7), flip=0.5, erasing=0.5,
    color_jitter=(0.3, 0.3, 0.0, 0.0), color_p=0.8,
  ),
  # As "generic" without colour jitter and grayscale (the ablation's step).
  "generic_no_color": dict(crop_scale=(0.3, 1.0), flip=0.5),
  # As "reid", plus batch style standardisation (BSS: Fourier amplitudes
  # shared across the batch, so camera colour / illumination cannot tell
  # images apart).
  "reid_bss": dict(
    crop_scale=(0.4, 1.0), crop_ratio=(0.35, 0.7), flip=0.5, erasing=0.5,
    style_standardization=0.5,
  ),
  # As "reid_bss", plus brightness / contrast jitter.
  "reid_light_bss": dict(
    crop_scale=(0.4, 1.0), crop_ratio=(0.35, 0.7), flip=0.5, erasing=0.5,
    color_jitter=(0.3, 0.3, 0.0, 0.0), color_p=0.8,
    style_standardization=0.5,
  ),
  # BSS on every batch, with a wider low-frequency window.
  "reid_bss_strong": dict(
    crop_scale=(0.4, 1.0), crop_ratio=(0.35, 0.7), flip=0.5, erasing=0.5,
    style_standardization=1.0, style_ratio=(0.05, 0.3),
  ),
  # Narrow crops: mostly the person, little of the (camera-specific)
  # background at the sides.
  "reid_narrow": dict(
    crop_scale=(0.3, 1.0), crop_ratio=(0.25, 0.45), flip=0.5, erasing=0.5,
  ),
}  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, loss="info_nce", views="reid_bss", temperature=0.1, epochs=20,
    batch=64, encoder="resnet18", width=16, height=128, width_px=64,
    cam_adv=0.0, seed=0, smoke=False,
  )  # fmt: skip
  if arg.views not in VIEWS:
    raise ValueError(f"views={arg.views!r}: expected one of {sorted(VIEWS)}")
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
  view = dict(size=size, **VIEWS[arg.views])
  c.views = dict(a=dict(view), b=dict(view))
  encoder_kw = {}
  if arg.encoder.startswith("resnet"):  # as configs/quickstart.py
    w = arg.width
    encoder_kw = dict(last_stride=1, widths=(w, 2 * w, 4 * w, 8 * w))
  c.model = dict(
    encoder=arg.encoder, encoder_kw=encoder_kw, head="projection",
    proj_hidden=512, proj_out=128, proj_layers=2, dtype="float32",
  )  # fmt: skip
  c.loss = dict(name=arg.loss, on="proj", temperature=arg.temperature)
  if arg.cam_adv > 0:  # PKU-Reid's 2 cameras pushed out of the embedding
    c.model.domain_classes = 2
    c.loss.camera_adversary = arg.cam_adv
  if arg.loss == "dclw":
    c.loss.sigma = 0.5
  c.optim = dict(
    name="adamw", lr=1e-3, weight_decay=1e-4,
    warmup_steps=c.total_steps // 10, end_lr_factor=0.01, clip_norm=0.0,
  )  # fmt: skip
  c.evals = common.pku_reid_eval(size)
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

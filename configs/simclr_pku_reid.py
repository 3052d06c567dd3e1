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

Arg keys: loss (info_nce: SimCLR | dcl | dclw), views (see VIEWS:
"reid_bss", the default, crops like a re-ID detector, keeps colour and
standardises the batch's Fourier style (BSS); "generic" is SimCLR's
ImageNet recipe with colour jitter and grayscale), temperature, epochs,
batch, encoder, width, cam_adv (weight of the camera adversary: a
discriminator of the 2 cameras on the embedding, whose balance loss pushes
the camera out of it), seed, smoke.

Expect: measured numbers and the ablation in
experiments/ssl_pku_reid/README.md (generic views: no better than the
untrained encoder; BSS is what makes the difference).
"""

import ml_collections

from configs import common

# The objective -> the method that trains with it.
METHODS = {"info_nce": "simclr", "dcl": "dcl", "dclw": "dclw"}

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
  if arg.loss not in METHODS:
    raise ValueError(f"loss={arg.loss!r}: expected one of {sorted(METHODS)}")
  if arg.views not in VIEWS:
    raise ValueError(f"views={arg.views!r}: expected one of {sorted(VIEWS)}")
  size = common.SMOKE_SIZE if arg.smoke else (arg.height, arg.width_px)
  batch = 16 if arg.smoke else arg.batch
  steps = arg.epochs * common.pku_reid_train_images() // arg.batch
  c = common.run(seed=arg.seed, total_steps=steps)
  c.input = common.pku_reid_input(size, batch=batch)
  c.views = {"global": dict(count=2, size=size, **VIEWS[arg.views])}
  c.model = common.resnet(arg.encoder, arg.width)
  c.method = dict(
    name=METHODS[arg.loss], temperature=arg.temperature, proj_hidden=512
  )
  if arg.cam_adv > 0:  # PKU-Reid's 2 cameras pushed out of the embedding
    c.method.camera_adversary = arg.cam_adv
    c.method.num_cameras = common.PKU_REID_CAMERAS
  c.optim = common.adamw(1e-3, 1e-4, c.total_steps)
  c.evals = common.pku_reid_eval(size)
  if arg.smoke:
    common.smoke(c)
    c.method.proj_hidden, c.method.proj_out = 32, 16
  return c

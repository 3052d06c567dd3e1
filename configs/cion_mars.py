r"""CION identity-guided self-distillation on MARS mini tracklets (or ids).

Zuo et al., NeurIPS 2024. DINO self-distillation (student; EMA teacher with
momentum 0.996 -> 1, teacher temperature 0.04, centre momentum 0.9) over
multi-crop views (2 global 128x64 crops the teacher sees, 4 local 64x32
crops), where each image's student must also predict the teacher's output
for the other K - 1 instances of its identity (`losses.cion`). K grows
during training: 2 for the first half, then 4 (the sampler's P x K batches
hold 4 instances per identity). Identities are tracklets of
mars_mini/bbox_train (data=mars, no labels) or the labelled ids of
PKU-Reid's training split (data=pku_reid). Evaluated with the teacher.

  python -m idlearn.main --config=configs/cion_mars.py --workdir=runs/cion
  python -m idlearn.main --config=configs/cion_mars.py:data=pku_reid \
      --workdir=runs/cion_pku_reid
  python -m idlearn.main --config=configs/cion_mars.py:smoke --workdir=/tmp/s

Needs ../shared/data/mars_mini for data=mars (training and evaluation).
Arg keys: data, steps, batch, k, local_crops, prototypes, head_bn
(BatchNorm in the DINO head; without it the teacher's targets stay
uniform here, measured in experiments/cion_mars/), seed, smoke.
Expect: measured numbers in experiments/cion_mars/README.md.
"""

import ml_collections

from configs import common, simclr_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, data="mars", steps=400, batch=64, k=4, local_crops=4,
    prototypes=1024, head_bn=True, seed=0, smoke=False,
  )  # fmt: skip
  if arg.data not in ("mars", "pku_reid"):
    raise ValueError(f"data={arg.data!r}: expected mars or pku_reid")
  base = f"batch={arg.batch},seed={arg.seed}" + (",smoke" if arg.smoke else "")
  c = simclr_pku_reid.get_config(base)
  c.total_steps = 2 if arg.smoke else arg.steps
  size = tuple(c.input.image_size)
  # Each device must hold whole identity groups: 8 (fake) devices x K=4.
  batch = 32 if arg.smoke else arg.batch
  if arg.data == "mars":
    c.input = common.mars_input(
      size, batch=batch, sampler="pk", k=arg.k, group_by="tracklet"
    )
    c.evals = dict(mars=common.mars_eval(size))
  else:
    c.input = common.pku_reid_input(size, batch=batch, sampler="pk", k=arg.k)
  crop = dict(
    size=size, crop_scale=(0.4, 1.0), crop_ratio=(0.35, 0.7), flip=0.5,
    color_jitter=(0.3, 0.3, 0.0, 0.0), color_p=0.8,
    style_standardization=0.5,
  )  # fmt: skip
  local = dict(crop, size=(size[0] // 2, size[1] // 2), crop_scale=(0.1, 0.4))
  c.views = {
    "global": dict(crop, count=2),
    "local": dict(local, count=2 if arg.smoke else arg.local_crops),
  }
  hidden, bottleneck = (32, 16) if arg.smoke else (512, 128)
  half = 0 if arg.smoke else c.total_steps // 2  # K = 2, then 4
  c.method = dict(
    name="cion", head_hidden=hidden, head_bottleneck=bottleneck,
    prototypes=32 if arg.smoke else arg.prototypes,
    head_bn=arg.head_bn,  # else the teacher's targets are uniform
    instances=(2, 4), instance_steps=(0, half),
  )  # fmt: skip
  c.optim = common.adamw(5e-4, 0.04, c.total_steps, clip_norm=3.0)
  if arg.smoke:
    c.optim.warmup_steps, c.optim.schedule = 0, "constant"
  for ev in c.evals.values():
    ev.use_ema = True  # the teacher is the model DINO / CION keep
  return c

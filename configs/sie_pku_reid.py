r"""SIE (split invariant-equivariant VICReg) vs invariant-only, on PKU-Reid.

SIE (Garrido, Najman, LeCun, ICML 2023; idlearn/methods/sie.py): the
encoder's representation (128 dims for the quarter-width ResNet-18) is
split into an invariant part (the first 128 - equi dims: the retrieval
feature) and an equivariant part (the last `equi`); a linear hypernetwork
predicts view 2's equivariant embedding from view 1's, conditioned on the
relative augmentation parameters of the two views (here the re-ID crop's
position, zoom and stretch, the flip, random erasing and BSS: those the
`views` preset varies, see `transforms_of`). `equi=0` is the invariant-only
arm: VICReg on the whole representation (same weights 10 / 10 / 1, same
projector widths in total, same views and budget). Views, encoder, budget
(20 epochs at batch 64: 310 steps, AdamW 1e-3 warmup + cosine) and
evaluation as configs/barlow_twins_pku_reid.py (and simclr_pku_reid.py),
projector 3 layers 1024 wide (split 512 / 512 between the parts).

Evaluation: re-ID on the 12 held-out ids (the invariant part, "eval"), and
"pku_reid_r2" (evaluators.equivariance): the R^2 of a ridge probe
predicting the relative augmentation parameters of two views of held-out
images from the concatenated representations: r2_all (whole), r2_inv
(first 128 - 64 dims), r2_equi (last 64 dims), per transform too. The
baseline arm reports the same slices (its last 64 dims are not trained to
be anything: the control).

  python -m idlearn.main --config=configs/sie_pku_reid.py:seed=0 \
      --workdir=runs/sie_pku_reid_s0
  python -m idlearn.main --config=configs/sie_pku_reid.py:seed=1 \
      --workdir=runs/sie_pku_reid_s1
  python -m idlearn.main --config=configs/sie_pku_reid.py:equi=0,seed=0 \
      --workdir=runs/sie_pku_reid_inv_s0
  python -m idlearn.main --config=configs/sie_pku_reid.py:equi=0,seed=1 \
      --workdir=runs/sie_pku_reid_inv_s1
  python -m idlearn.main --config=configs/sie_pku_reid.py:smoke \
      --workdir=/tmp/sie_smoke

Arg keys: equi (equivariant dims of the 128; 0: the invariant-only VICReg
arm), beta (the equivariance weight, official 0.45), views (a preset of
configs/simclr_pku_reid.py, default reid_bss), epochs, batch, seed, smoke.
Expect: ~3 min a run on the 2-core CPU (3:11 SIE, 2:59 VICReg, 4630f68,
with the R^2 evaluations at start and end); numbers in experiments/sie/.
"""

from collections.abc import Mapping

import ml_collections

from configs import common, simclr_pku_reid

# The equivariant part's width in the evaluator's slices (smoke: of the
# 32-dim resnet_tiny), whatever the arm.
EVAL_EQUI, SMOKE_EQUI = 64, 16


def transforms_of(spec: Mapping) -> tuple[str, ...]:
  """The augmentation parameters (idlearn.augment.PARAM_NAMES) a view spec
  varies: what z and the R^2 probe use. Checked against the augmentation
  in tests/methods/sie_test.py."""
  names = []
  if spec.get("crop_scale"):
    names += ["crop_y", "crop_x", "crop_scale", "crop_aspect"]
  if spec.get("pad", 0):
    names += ["pad_y", "pad_x"]
  if spec.get("flip", 0) > 0:
    names.append("flip")
  cj = spec.get("color_jitter", 0.0)
  cj = (cj, cj, cj, cj / 4) if isinstance(cj, int | float) else tuple(cj)
  if spec.get("color_p", 0.8) > 0:
    jitter = ("brightness", "contrast", "saturation", "hue")
    names += [n for n, s in zip(jitter, cj, strict=True) if s > 0]
  for key, name in (
    ("grayscale", "grayscale"),
    ("blur", "blur"),
    ("style_standardization", "style"),
    ("erasing", "erasing"),
  ):
    if spec.get(key, 0) > 0:
      names.append(name)
  return tuple(names)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, equi=EVAL_EQUI, beta=0.45, views="reid_bss", epochs=20, batch=64,
    seed=0, smoke=False,
  )  # fmt: skip
  base = f"views={arg.views},epochs={arg.epochs},batch={arg.batch}"
  base += f",seed={arg.seed}" + (",smoke" if arg.smoke else "")
  c = simclr_pku_reid.get_config(base)
  spec = simclr_pku_reid.VIEWS[arg.views]
  transforms = transforms_of(spec)
  # the views hand over their augmentation parameters (z)
  c.views["global"]["params"] = True
  equi, eval_equi = arg.equi, EVAL_EQUI
  mlp = (1024, 1024, 1024)
  if arg.smoke:  # resnet_tiny: 32 dims
    eval_equi, mlp = SMOKE_EQUI, (32, 32, 16)
    equi = SMOKE_EQUI if arg.equi else 0
  c.method = dict(
    name="sie", equi=equi, mlp=mlp, equi_weight=arg.beta,
    transforms=transforms,
  )  # fmt: skip
  size = tuple(c.input.image_size)
  c.evals.pku_reid_r2 = dict(
    type="equivariance", data="pku_reid", split="val", image_size=size,
    views=dict(size=size, **spec), transforms=transforms,
    equi_dims=eval_equi, pairs_per_image=1 if arg.smoke else 4,
  )  # fmt: skip
  return c

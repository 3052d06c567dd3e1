r"""Face embeddings on AT&T faces: FaceNet triplets, or ArcFace / CosFace.

Trains on subjects s1..s28 (280 grey 112x92 images, bundled) and reports
face verification on the 12 held-out subjects s29..s40: 600 seeded
balanced pairs in 10 folds (LFW protocol: each fold's threshold chosen on
the other nine), ROC AUC and TAR@FAR.

  python -m idlearn.main --config=configs/facenet_att_faces.py \
      --workdir=runs/facenet_att_faces
  python -m idlearn.main --config=configs/facenet_att_faces.py:smoke \
      --workdir=/tmp/smoke

loss=triplet (default, FaceNet: Schroff et al. 2015): L2-normalised 128-d
embedding, squared Euclidean distances, margin 0.2, online semi-hard
mining within P x K batches. loss=arcface / cosface (configs/
arcface_att_faces.py, cosface_att_faces.py): the same embedding with a
margin softmax over the 28 training subjects (scale 30; margin 0.5 rad /
0.35).

loss=triplet_ce: the re-ID recipe of configs/supervised_pku_reid.py
(batch-hard triplet + label-smoothed CE with a BNNeck) on faces.
Verification scores each image by its unit feature plus its mirror's
(flip test, as LFW results usually are).

Arg keys: loss, steps, p, k, encoder, width, height, width_px, aug (light
| strong), lr, seed, smoke. Expect: measured
numbers in experiments/faces_att/README.md.
"""

import ml_collections

from configs import common

MARGINS = ("arcface", "cosface")  # their margins: the methods' defaults
AUGMENT = {
  "light": dict(
    crop_scale=(0.7, 1.0), crop_ratio=(0.75, 0.95), flip=0.5,
    color_jitter=(0.3, 0.3, 0.0, 0.0), color_p=0.8,
  ),
  # wider crops and erased patches: 28 training subjects overfit fast
  "strong": dict(
    crop_scale=(0.4, 1.0), crop_ratio=(0.7, 1.0), flip=0.5,
    color_jitter=(0.4, 0.4, 0.0, 0.0), color_p=0.8, blur=0.2, erasing=0.5,
  ),
}  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, loss="triplet", steps=400, p=14, k=4, encoder="resnet18", width=16,
    height=112, width_px=96, aug="light", lr=1e-3, seed=0, smoke=False,
  )  # fmt: skip
  if arg.loss not in ("triplet", "triplet_ce", *MARGINS):
    raise ValueError(
      f"loss={arg.loss!r}: expected triplet, triplet_ce, arcface, cosface"
    )
  if arg.aug not in AUGMENT:
    raise ValueError(f"aug={arg.aug!r}: expected one of {sorted(AUGMENT)}")
  size = (32, 24) if arg.smoke else (arg.height, arg.width_px)
  batch = 16 if arg.smoke else arg.p * arg.k
  c = common.run(seed=arg.seed, total_steps=arg.steps)
  c.input = common.att_faces_input(size, batch=batch, k=arg.k)
  c.views = dict(image=dict(size=size, **AUGMENT[arg.aug]))
  c.model = common.resnet(arg.encoder, arg.width, last_stride=2)
  dim = 16 if arg.smoke else 128
  if arg.loss == "triplet":  # FaceNet's defaults: see idlearn.methods
    c.method = dict(name="facenet", neck_dim=dim)
  elif arg.loss == "triplet_ce":  # the re-ID recipe: triplet + CE, BNNeck
    c.method = dict(name="supervised")
  else:
    c.method = dict(name=arg.loss, neck_dim=dim)
  c.optim = common.adamw(arg.lr, 5e-4, c.total_steps)
  c.evals = common.att_faces_evals(size)
  if arg.smoke:
    common.smoke(c)
  return c

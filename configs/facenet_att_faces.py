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

MARGINS = {"arcface": 0.5, "cosface": 0.35}
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
  c = ml_collections.ConfigDict()
  size = (arg.height, arg.width_px)
  c.seed = arg.seed
  c.total_steps = arg.steps
  c.log_steps, c.ckpt_steps, c.keep_ckpts = 10, 100, 2
  c.best_metric, c.best_mode = "", "max"
  c.eval_at_start = True
  c.async_ckpt = True
  c.input = dict(
    name="att_faces", split="train", image_size=size,
    global_batch_size=arg.p * arg.k, sampler="pk", k=arg.k, num_workers=0,
    data_dir="", manual_dir="",
  )  # fmt: skip
  c.views = dict(a=dict(size=size, **AUGMENT[arg.aug]))
  w = arg.width
  head = {"triplet": "embedding", "triplet_ce": "bnneck"}.get(
    arg.loss, "margin"
  )
  c.model = dict(
    encoder=arg.encoder, encoder_kw=dict(widths=(w, 2 * w, 4 * w, 8 * w)),
    head=head, num_classes=0, proj_out=128, dtype="float32",
  )  # fmt: skip
  if arg.loss == "triplet":
    c.loss = dict(
      name="triplet", on="proj", margin=0.2, mining="semi_hard",
      squared=True, normalize=True,
    )  # fmt: skip
  elif arg.loss == "triplet_ce":  # the re-ID recipe: triplet + CE, BNNeck
    c.loss = dict(name="triplet_ce", margin=0.3, label_smoothing=0.1)
  else:
    c.loss = dict(
      name=arg.loss, on="proj", scale=30.0, margin=MARGINS[arg.loss]
    )
  c.optim = dict(
    name="adamw", lr=arg.lr, weight_decay=5e-4,
    warmup_steps=c.total_steps // 10, end_lr_factor=0.01,
  )  # fmt: skip
  verify = dict(
    type="verification", data="att_faces", image_size=size, batch_size=64,
    log_steps=0, feature="eval", folds=10, pairs_per_fold=60, pairs_seed=0,
    flip_test=True,
  )  # fmt: skip
  # "eval" is the trained 128-d embedding; "emb" the encoder's pooled
  # feature under it (with 28 training subjects it can generalise better).
  c.evals = dict(
    att_faces=verify, att_faces_backbone=dict(verify, feature="emb")
  )
  if arg.smoke:
    c.total_steps, c.log_steps, c.ckpt_steps = 2, 1, 1
    c.input.global_batch_size, c.input.k = 16, 4
    small = (32, 24)
    c.input.image_size = c.views.a.size = small
    for ev in c.evals.values():
      ev.image_size = small
    c.model.encoder = "resnet_tiny"
    c.model.encoder_kw = {}
    c.model.proj_out = 16
    c.optim.warmup_steps = 0
  return c

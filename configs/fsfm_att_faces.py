r"""FSFM (masked image modelling with CRFR-P + EMA self-distillation) on
AT&T faces, against MIM alone and DINO alone, all on one small ViT.

Pretrains without labels (random batches) on subjects s1..s28 (280 grey
crops, bundled) and reports face verification on the 12 held-out subjects
s29..s40 (600 seeded pairs, 10 folds, flip test) with the online encoder
(eval/att_faces) and its EMA teacher (eval/att_faces_ema); the feature is
the mean of the encoder's normed patch tokens on the whole image. Arms
(same ViT, batch, steps, optimizer; method=):

  fsfm  L_rec + 0.007 L_rec_sfr + 0.1 L_cl (idlearn/methods/fsfm.py)
  mim   the same with w_cl = 0 (MIM alone, CRFR-P masks, no teacher call)
  dino  configs/dino_mars.py's DINO on two global crops per image (no
        local crops: the ViT's position embeddings fix its input size)

  for s in 0 1; do for m in fsfm mim dino; do
    python -m idlearn.main \
        --config=configs/fsfm_att_faces.py:method=$m,seed=$s \
        --workdir=runs/fsfm_att_faces/${m}_s$s
  done; done
  python -m idlearn.main --config=configs/fsfm_att_faces.py:smoke \
      --workdir=/tmp/fsfm_smoke

Model: ViT, patch 8 on 80x64 crops (10 x 8 patches: FSFM masks 60, the
encoder sees 20), width 128, depth 4, 4 heads, mean-pooled (0.83M
parameters); FSFM's rep and pixel decoders 64 wide, 2 blocks, 2 heads
(official for ViT-B: 768 x 2 and 512 x 8), BYOL MLPs 512 -> 128 (official
4096 -> 256). AdamW (b2 0.95, weight decay 0.05, clip 1.0), lr 5e-4 with
10% warmup then cosine to 0, batch 64, 400 steps (~91 epochs); EMA
momentum 0.996 -> 1 (FSFM's and DINO's). The CRFR-P regions come from a
fixed layout of the roughly aligned crops (idlearn/mining/fsfm_masks.py),
not from parsing maps.

Measured on the 2-core CPU while other training runs held it (load
average 4.5-5.5): fsfm 0.75-1.0 s/step, mim 0.33 s/step, dino 2.0-2.8
s/step (two crops through student and teacher), so at 400 steps about
6, 2.5 and 13-19 min a run (5 x 2 verifications included); steps=300
keeps dino under 15 min.

Arg keys: method (fsfm | mim | dino), steps, batch, height, width_px,
dim, depth, heads (the ViT), dec (decoder width), lr, flip (FSFM / MIM
views: horizontal flips keep the symmetric region layout aligned; the
official recipe uses none), head_bn (BatchNorm in DINO's head), seed,
smoke.
"""

import ml_collections

from configs import common

ARMS = ("fsfm", "mim", "dino")


def _vit(size, *, width, depth, heads) -> dict:
  kw = dict(width=width, depth=depth, num_heads=heads, patch=8,
            img_size=size, pooling="mean")  # fmt: skip
  return dict(encoder="vit_ti8", encoder_kw=kw, init="")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, method="fsfm", steps=400, batch=64, height=80, width_px=64, dim=128,
    depth=4, heads=4, dec=64, lr=5e-4, flip=0.5, head_bn=True, seed=0,
    smoke=False,
  )  # fmt: skip
  if arg.method not in ARMS:
    raise ValueError(f"method={arg.method!r}: expected one of {ARMS}")
  size = (32, 24) if arg.smoke else (arg.height, arg.width_px)
  c = common.run(seed=arg.seed, total_steps=arg.steps)
  c.input = dict(
    name="att_faces", image_size=size, global_batch_size=arg.batch,
    sampler="random",  # no labels: batches ignore the subjects
  )  # fmt: skip
  c.model = _vit(size, width=arg.dim, depth=arg.depth, heads=arg.heads)
  small = dict(rep_width=arg.dec, rep_depth=2, rep_heads=2,
               pix_width=arg.dec, pix_depth=2, pix_heads=2, proj_hidden=512,
               proj_out=128, pred_hidden=512)  # fmt: skip
  if arg.method == "dino":
    crop = dict(
      size=size, crop_scale=(0.3, 1.0), crop_ratio=(0.7, 1.0), flip=0.5,
      color_jitter=(0.4, 0.4, 0.0, 0.0), color_p=0.8, blur=0.5,
    )  # fmt: skip
    c.views = {"global": dict(crop, count=2)}
    c.method = dict(
      name="dino", head_hidden=512, head_bottleneck=128, prototypes=1024,
      head_bn=arg.head_bn,  # see configs/cion_mars.py
    )  # fmt: skip
  else:
    c.views = dict(image=dict(size=size, flip=arg.flip))
    c.method = dict(name="fsfm", w_cl=0.1 if arg.method == "fsfm" else 0.0,
                    **small)  # fmt: skip
  c.optim = dict(
    common.adamw(arg.lr, 0.05, c.total_steps, b2=0.95, clip_norm=1.0),
    end_lr_factor=0.0,
  )
  verify = dict(type="verification", data="att_faces", image_size=size,
                flip_test=True, log_steps=max(arg.steps // 4, 1))  # fmt: skip
  # the online encoder first: it is the one that leaves the run
  c.evals = dict(att_faces=verify, att_faces_ema=dict(verify, use_ema=True))
  if arg.smoke:
    c.total_steps, c.log_steps, c.ckpt_steps = 2, 1, 1
    c.input.global_batch_size = 16
    c.optim.warmup_steps, c.optim.schedule = 0, "constant"
    c.model = _vit(size, width=32, depth=1, heads=2)
    if arg.method == "dino":
      c.method.update(head_hidden=32, head_bottleneck=16, prototypes=32)
    else:
      c.method.update(
        rep_width=16, rep_depth=1, rep_heads=2, pix_width=16, pix_depth=1,
        pix_heads=2, proj_hidden=32, proj_out=16, pred_hidden=32,
      )  # fmt: skip
    for ev in c.evals.values():
      ev.log_steps = 0
  return c

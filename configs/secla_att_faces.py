r"""SECLA / SECLA-B: weakly supervised face naming on AT&T image-caption
groups, against a one-direction contrastive baseline.

Groups (idlearn/data/secla_groups.py, fixed by split_seed for every arm
and seed): 2000 training "photos" of 1-4 faces of distinct subjects from
s1..s28 (8 images each), each with a caption of their names (each left
out with p = 0.1: that face is then NONAME) plus 0-2 distractor names, in
random order, and NONAME; 300 held-out photos the same way from the other
2 images of each subject. Face and name embeddings are learned from the
groups alone (idlearn/methods/secla.py): a quarter-width ResNet-18 from
scratch + the official two5 projector (-> 128), and a trained name table
+ projector (no BERT offline). Arms (same data, model, batch, steps,
optimizer; arm=):

  secla    both directions + 0.15 x diagonal agreement (the paper's loss)
  one_way  face -> name CE only, no agreement (official direction="name")
  one_way_nf  name -> face CE only, no agreement (official "face")
  secla_b  SECLA-B: the first 20% of the steps on the easy groups (one
           face, one name; ~8% of the groups), then every group split by
           the current model into matched / unmatched parts, SECLA on the
           unmatched, the combined + face (anti-forgetting) terms on the
           matched, with a random easy face of each caption name

  for s in 0 1; do for a in secla one_way one_way_nf secla_b; do
    python -m idlearn.main \
        --config=configs/secla_att_faces.py:arm=$a,seed=$s \
        --workdir=runs/secla_att_faces/${a}_s$s
  done; done
  python -m idlearn.main --config=configs/secla_att_faces.py:smoke \
      --workdir=/tmp/secla_smoke

Reported (eval/...): naming/accuracy on the held-out groups (a face is
right when named with its own name, or NONAME when its name is not in
the caption; official scripts/run_test.py rule), named_accuracy,
noname_accuracy, chance (uniform pick among the caption's names), the
same on the training groups under naming/train/ (the official,
transductive protocol), and face verification of the encoder's feature on
the held-out subjects s29..s40 (eval/att_faces/..., 600 pairs, 10 folds,
flip test), as in configs/facenet_att_faces.py.

Budget: batch 16 groups (<= 64 faces; the official batch is 20 pairs),
112x96 crops, 1200 steps (~10 passes over the groups), AdamW lr 1e-3
(official 3e-4, for projectors on frozen features; here the encoder
trains from scratch), weight decay 0.1, eps 1e-6, 10% warmup then cosine
to 1% (official: cosine restarting every 64 iterations). Measured on the
2-core CPU while another training ran on it (load average ~3): secla and
one_way 0.38 s/step, so ~8.5 min a run with compilation and the 5 x 2
evaluations; secla_b 0.11 s/step in stage 1 (one face a group) and 0.54
s/step in stage 2 (+ 6 easy faces a group, forward only), plus ~20 s to
compile the stage-2 step: ~10 min (4.5-9.5 min measured at load 2-3).
Results: experiments/secla/README.md (held-out naming, two seeds: SECLA
98.0 %, name -> face alone 49.3 %, face -> name alone 11.1 %: it collapses
onto NONAME; SECLA-B 96.7 %; with distractors=6,drop=0.3 SECLA 27.9 %
and SECLA-B 87.7 %).

Arg keys: arm (secla | one_way | one_way_nf | secla_b), steps, batch
(groups), groups, max_faces, distractors (the ambiguity), drop
(drop_name), easy (SECLA-B's stage-1 fraction of the steps), height,
width_px, encoder, width, lr, seed, smoke. Group fields set here go to
both the miner and the naming evaluator (set them through the arg, not
--config.miner.*, so that the two stay the same).
"""

import ml_collections

from configs import common

ARMS = ("secla", "one_way", "one_way_nf", "secla_b")
# configs/facenet_att_faces.py's "light" views
VIEWS = dict(
  crop_scale=(0.7, 1.0), crop_ratio=(0.75, 0.95), flip=0.5,
  color_jitter=(0.3, 0.3, 0.0, 0.0), color_p=0.8,
)  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, arm="secla", steps=1200, batch=16, groups=2000, max_faces=4,
    distractors=2, drop=0.1, easy=0.2, height=112, width_px=96,
    encoder="resnet18", width=16, lr=1e-3, seed=0, smoke=False,
  )  # fmt: skip
  if arg.arm not in ARMS:
    raise ValueError(f"arm={arg.arm!r}: expected one of {ARMS}")
  size = (32, 24) if arg.smoke else (arg.height, arg.width_px)
  c = common.run(seed=arg.seed, total_steps=arg.steps)
  c.input = dict(
    name="att_faces", image_size=size, global_batch_size=arg.batch,
    sampler="random",  # unused: the miner makes the group batches
  )  # fmt: skip
  c.views = dict(image=dict(size=size, **VIEWS))
  c.model = common.resnet(arg.encoder, arg.width, last_stride=2)
  groups = dict(
    groups=arg.groups, test_groups=300, max_faces=arg.max_faces,
    distractors=arg.distractors, drop_name=arg.drop, test_per_subject=2,
    split_seed=0,
  )  # fmt: skip
  c.method = dict(
    name="secla", directions="both", alpha=0.15, bootstrap=False,
    name_dim=512, proj_hidden=512, proj_dim=128,
  )  # fmt: skip
  if arg.arm.startswith("one_way"):
    way = "name_to_face" if arg.arm == "one_way_nf" else "face_to_name"
    c.method.update(directions=way, alpha=0.0)
  c.miner = dict(name="caption_groups", every_steps=arg.steps, easy_steps=0,
                 **groups)  # fmt: skip
  c.optim = common.adamw(arg.lr, 0.1, c.total_steps, eps=1e-6)
  verify = dict(type="verification", data="att_faces", image_size=size,
                flip_test=True, log_steps=arg.steps // 4)  # fmt: skip
  naming = dict(type="naming", data="att_faces", image_size=size,
                groups=groups, log_steps=arg.steps // 4)  # fmt: skip
  c.evals = dict(att_faces=verify, naming=naming)
  if arg.smoke:
    common.smoke(c)
    c.input.global_batch_size = 8
    c.method.update(name_dim=16, proj_hidden=32, proj_dim=16)
    small = dict(groups=64, test_groups=16)
    c.miner.update(small)
    c.evals.naming.groups.update(small)
    for ev in c.evals.values():
      ev.log_steps = 0
  # stage 1 of SECLA-B ends at a re-draw of the batches
  easy = max(int(c.total_steps * arg.easy), 1) if arg.arm == "secla_b" else 0
  c.method.bootstrap = easy > 0
  c.miner.update(every_steps=easy or c.total_steps, easy_steps=easy)
  return c

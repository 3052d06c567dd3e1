r"""AniTalker identity / motion decoupling on MARS mini frame pairs (+ CLUB).

Liu et al., ACM MM 2024, with Cheng et al.'s CLUB (ICML 2020); method and
assumptions in idlearn/methods/anitalker.py. Each row of a batch is a
source and a target frame `frame_gap` apart in one tracklet of
mars_mini/bbox_train (32 tracklets, 16 ids; the tracklet is the class of
the AAM-softmax, identity labels are not read). A quarter-width ResNet-18
(last stride 1, 128x64) feeds an identity head (the retrieval feature)
and a motion head; a small conv decoder rebuilds the target at 64x32 from
[source identity code, target motion code]; the CLUB bound between the
motion and the identity code is minimised with weight `mi` (its estimator
trained in the same backward pass). The arms differ only in `mi`.

Reported: tracklet retrieval from the identity code (eval/mars: the
gtPepper query / gallery tracklets of 16 other ids) and how much identity
a ridge probe recovers from each code (eval/mars_probe/<code>/top1 for
identity, motion and the shared trunk feature; chance = the majority
id): the probe is fitted on 2 of each test id's 4 tracklets (16 frames
each) and names the other 2.

  python -m idlearn.main --config=configs/anitalker_mars.py \
      --workdir=runs/anitalker_mars/mi_s0
  python -m idlearn.main --config=configs/anitalker_mars.py:seed=1 \
      --workdir=runs/anitalker_mars/mi_s1
  python -m idlearn.main --config=configs/anitalker_mars.py:mi=0 \
      --workdir=runs/anitalker_mars/nomi_s0
  python -m idlearn.main --config=configs/anitalker_mars.py:mi=0,seed=1 \
      --workdir=runs/anitalker_mars/nomi_s1
  python -m idlearn.main --config=configs/anitalker_mars.py:smoke \
      --workdir=/tmp/ani_smoke

Budget: 600 steps of 32 frame pairs (64 images; ~13 passes over the
~1,460 pairs), about 6.5 minutes per run on the 2-core CPU with another
job running (measured: 0.52 s/step, plus ~1 minute for start-up,
compilation and the evaluations at start and end).
Needs ../shared/data/mars_mini (or $IDLEARN_SHARED_DATA/mars_mini).
Arg keys: mi (CLUB weight; 0: the baseline), club (mean: CLUBMean, the
maintainers' hint | gaussian: learned variance), hinge (minimise
max(bound, 0), see the method), steps, batch, frame_gap, seed, smoke.
Assumed, not released by AniTalker: every loss weight (recon 1, aam 1,
mi 0.1), the hinge, AAM-softmax over tracklets, the decoder, the codes'
sizes (identity 128, motion 32).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, mi=0.1, club="mean", hinge=True, steps=600, batch=32, frame_gap=8,
    seed=0, smoke=False,
  )  # fmt: skip
  if arg.mi < 0 or arg.club not in ("mean", "gaussian"):
    raise ValueError(
      f"mi={arg.mi} (expected >= 0), club={arg.club!r} (mean | gaussian)"
    )
  size = common.SMOKE_SIZE if arg.smoke else (128, 64)
  c = common.run(seed=arg.seed, total_steps=arg.steps)
  c.input = common.mars_input(
    size, batch=16 if arg.smoke else arg.batch, sampler="frame_pairs",
    frame_gap=arg.frame_gap,
  )  # fmt: skip
  # Mild, independent per frame: the identity code must ignore a flip
  # or a crop that the motion code (and the decoder) must follow.
  view = dict(size=size, crop_scale=(0.6, 1.0), crop_ratio=(0.35, 0.7),
              flip=0.5)  # fmt: skip
  c.views = dict(source=view, target=dict(view, frame=1))
  c.model = common.resnet("resnet18", 16)
  c.method = dict(
    name="anitalker", id_dim=128, motion_dim=32, motion_hidden=128,
    decoder_widths=(64, 32, 16), recon_stride=2, mi_weight=arg.mi,
    club=arg.club, club_hidden=128, mi_hinge=arg.hinge, scale=30.0,
    margin=0.2,
  )  # fmt: skip
  c.optim = common.adamw(1e-3, 1e-4, c.total_steps)
  probe = dict(
    type="code_probe", data="mars", manual_dir=common.shared("mars_mini"),
    image_size=size, splits=("query", "gallery"), group_by="tracklet",
    max_per_group=16,
  )  # fmt: skip
  c.evals = dict(mars=common.mars_eval(size), mars_probe=probe)
  if arg.smoke:
    common.smoke(c)
    c.method.update(id_dim=16, motion_dim=8, motion_hidden=16,
                    club_hidden=16, decoder_widths=(8, 8, 8))  # fmt: skip
  return c

r"""CaCL: labelled PKU-Reid + unlabelled MARS mini (6 cameras), tested on
MARS mini, at DomainMix's budget (configs/domainmix_pku_mars.py).

Lee et al., ICCV 2023 (idlearn/methods/cacl.py; what is the paper's and
what is ours is written there). Quarter-width ResNet-18 (last stride 1),
128x64, batch 64, 600 steps, AdamW 1e-3 cosine, as DomainMix. Steps
0-149: source batches only (PKU-Reid's 62 ids, triplet + CE). At step 150
the source-trained encoder orders MARS mini's 6 cameras by MMD to
PKU-Reid; stage k (from step 150 + 60 k; the 6th, all cameras, runs from
450 to 600) clusters the frames of the first k + 1 cameras into pseudo
identities (DomainMix's clustering, every 30 steps) and each batch holds
P x K source ids + P x K pseudo ids. Loss: source CE, target centroid CE,
batch-hard triplet, + cd_weight x camera-diversity loss on the target.
Logged: the order (log line), per mining "curriculum/stage",
"pseudo/num_clusters" and "pseudo/camera_bias" (fraction of
single-camera clusters) in metrics.jsonl, and MARS mini's retrieval
every `every_steps` (the last one of each stage: its result). Wall:
5:24-5:41 a run on the 2-core CPU (1f0e6ba, other jobs beside it), plus
~10 s per evaluation.

  python -m idlearn.main --config=configs/cacl_pku_mars.py:seed=0 \
      --workdir=runs/cacl_s0
  python -m idlearn.main --config=configs/cacl_pku_mars.py:seed=1 \
      --workdir=runs/cacl_s1
  python -m idlearn.main --config=configs/cacl_pku_mars.py:cd=0,seed=0 \
      --workdir=runs/cacl_nocd_s0
  python -m idlearn.main --config=configs/cacl_pku_mars.py:cd=0,seed=1 \
      --workdir=runs/cacl_nocd_s1
  python -m idlearn.main --config=configs/cacl_pku_mars.py:smoke \
      --workdir=/tmp/smoke

Comparison rows at the same budget (same encoder, steps, batch, evals;
S = 0, 1):
  python -m idlearn.main \
      --config=configs/domainmix_pku_mars.py:target=False,seed=S \
      --workdir=runs/source_only_sS
  python -m idlearn.main --config=configs/domainmix_pku_mars.py:seed=S \
      --workdir=runs/domainmix_sS
  python experiments/summarize.py \
      --metrics rank1,mAP,pku_reid/rank1,pku_reid/mAP runs/cacl_s0 \
      runs/cacl_nocd_s0 runs/source_only_s0 runs/domainmix_s0

Needs ../shared/data/mars_mini. Arg keys: steps, source_steps, stage_steps,
every_steps (re-clustering interval; divides the two others), cd
(camera-diversity weight; 0 ablates it), eps, p, k, seed, smoke.
Expect: measured numbers in experiments/cacl/ once run.
"""

import ml_collections

from configs import common, domainmix_pku_mars


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, steps=600, source_steps=150, stage_steps=60, every_steps=30,
    cd=1.0, eps=0.6, p=16, k=4, seed=0, smoke=False,
  )  # fmt: skip
  same = f"steps={arg.steps},eps={arg.eps},p={arg.p},k={arg.k},seed={arg.seed}"
  c = domainmix_pku_mars.get_config(same + (",smoke" if arg.smoke else ""))
  c.method = dict(name="cacl", cd_weight=arg.cd)
  c.miner = dict(
    name="camera_curriculum", data="mars",
    manual_dir=common.shared("mars_mini"), eps=arg.eps,
    every_steps=arg.every_steps, source_steps=arg.source_steps,
    stage_steps=arg.stage_steps,
  )  # fmt: skip
  if arg.smoke:  # warm-up at step 0, stage 1 at 1, stage 2 at 2 (resume)
    c.miner.update(every_steps=1, source_steps=1, stage_steps=1)
  else:  # the target's retrieval after every clustering: per stage
    c.evals.mars.log_steps = arg.every_steps
  return c

r"""MMT with Attentive WaveBlock: PKU-Reid-trained models adapted to MARS mini.

Wang et al., IEEE TIP 2022, on Mutual Mean Teaching (Ge et al., ICLR
2020): two networks and their mean teachers refine k-means pseudo labels
of the unlabelled target (mars_mini/bbox_train, 1,719 frames, labels
unused; K = 16 clusters), re-clustered every pass over it (27 steps).
Both networks start from source models: configs/domainmix_pku_mars.py's
source-only baseline (PKU-Reid, 600 steps) with seeds 0 and 1; run `seed`
starts net1 from source seed `seed` and net2 from source seed `seed ^ 1`,
and retrieves with net1's mean teacher, so it compares with that source
run's `eval/...` (this run's `untrained/` numbers differ from them: the
BNNeck starts fresh, only the encoder is loaded).
Budget as DomainMix's: quarter-width ResNet-18 (last stride 1), 128x64,
batch 64 (16 pseudo ids x 4), 600 steps; MMT's optimizer (Adam(W) 3.5e-4
constant, wd 5e-4) and loss weights (l_ce 0.5, l_tri 0.8, EMA 0.999).
Arms (`waveblock`): none (plain MMT), plain (+ WaveBlock after layer2 and
layer3), pre_a (CBAM then WaveBlock), post_a (WaveBlock then non-local).
Evaluated on MARS mini query / gallery tracklets and PKU-Reid held-out ids.

  for s in 0 1; do python -m idlearn.main \
      --config=configs/domainmix_pku_mars.py:target=False,seed=$s \
      --workdir=runs/awb_source_s$s; done
  for arm in none plain pre_a post_a; do for s in 0 1; do
    python -m idlearn.main \
        --config=configs/awb_pku_mars.py:waveblock=$arm,seed=$s \
        --workdir=runs/awb_${arm}_s$s; done; done
  python -m idlearn.main --config=configs/awb_pku_mars.py:smoke \
      --workdir=/tmp/smoke

Needs ../shared/data/mars_mini. Arg keys: waveblock, steps, every_steps
(0: one pass over the target), clusters (K), source (workdir prefix of
the source runs: init = SOURCE_s{seed}/encoder/final, init2 = that of
seed ^ 1; "" : both from scratch), p, k, seed, smoke.
Expect: ~70 min a run on the 2-core CPU (estimate: 2.9x DomainMix's
compute per step, 2 feature passes per clustering); numbers: to be
measured (experiments/awb/).
"""

import ml_collections

from configs import common

# waveblock arm -> the attention the retrieval encoder keeps after layer2
# and layer3 (WaveBlock, training-only, is added by the method)
ATTENTION = {"none": "", "plain": "", "pre_a": "cbam", "post_a": "nonlocal"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, waveblock="post_a", steps=600, every_steps=0, clusters=16,
    source="runs/awb_source", p=16, k=4, seed=0, smoke=False,
  )  # fmt: skip
  if arg.waveblock not in ATTENTION:
    raise ValueError(
      f"config arg waveblock={arg.waveblock!r}: one of {list(ATTENTION)}"
    )
  size = common.SMOKE_SIZE if arg.smoke else (128, 64)
  batch = 16 if arg.smoke else arg.p * arg.k
  c = common.run(seed=arg.seed, total_steps=arg.steps)
  # the unlabelled target; its ids are replaced by the miner's pseudo labels
  c.input = common.mars_input(size, batch=batch, sampler="pk", k=arg.k)
  # re-ID augmentation, one independent view per network
  pad = max(2, 10 * size[0] // 256)
  c.views = dict(image=dict(size=size, flip=0.5, pad=pad, erasing=0.5,
                            count=2))  # fmt: skip
  c.model = common.resnet("resnet18", 16)
  source = arg.source if not arg.smoke else ""
  if source:
    c.model.init = f"{source}_s{arg.seed}/encoder/final"
  c.method = dict(
    name="mmt", waveblock=arg.waveblock,
    init2=f"{source}_s{arg.seed ^ 1}/encoder/final" if source else "",
  )  # fmt: skip
  every = arg.every_steps or -(-common.mars_train_images() // batch)
  c.miner = dict(
    name="target_kmeans", every_steps=1 if arg.smoke else every,
    num_clusters=batch // arg.k if arg.smoke else arg.clusters,
  )  # fmt: skip
  c.optim = dict(name="adamw", lr=3.5e-4, weight_decay=5e-4,
                 schedule="constant")  # fmt: skip
  c.evals = common.pku_reid_eval(size)
  c.evals.mars = common.mars_eval(size)
  for ev in c.evals.values():
    ev.use_ema = True  # net1's mean teacher is the model MMT keeps
  if arg.smoke:
    common.smoke(c)
  if ATTENTION[arg.waveblock]:
    layers = ATTENTION[arg.waveblock]
    c.model.encoder_kw.after_stage = ("", layers, layers, "")
  return c

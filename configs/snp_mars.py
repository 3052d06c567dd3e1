r"""SnP: train on the pool identities searched for MARS mini, vs random / all.

Yao et al., "Large-scale Training Data Search for Object
Re-identification", CVPR 2023 (idlearn/mining/snp.py). Source pool: every
bundled re-ID set but the target, PKU-Reid train (62 ids, 992 images) and
Market-1501 mini bounding_box_train (16 ids, 32 images): 78 ids. Target:
mars_mini/bbox_train (1,719 frames; labels unused). Before the first step
the run chooses its training identities (`config.select`, once, kept in
WORKDIR/selection/<arm>-<hash>/ as an image folder and reused on resume),
then trains the supervised recipe of configs/quickstart.py on them
(quarter-width ResNet-18 from scratch, P x K batches, batch-hard triplet +
label-smoothed identity CE, BNNeck) and evaluates on MARS mini's query /
gallery tracklets (and PKU-Reid's 12 held-out ids).

Arms, at one identity budget (ids=32 of the pool's 78) and one step budget
(steps=300, ~ quickstart's 20 PKU-Reid epochs, whatever the set's size):
  select=snp     6 balanced clusters of 13 ids, ranked by FD to the target;
                 the best-FD prefix, filled up to / pruned to 32 ids
  select=random  32 ids drawn uniformly from the pool
  select=all     the whole pool (78 ids; ids unused)
FD features: the images at 8x4 pixels (no ImageNet Inception offline; see
idlearn/mining/selection.py for the measured choice). The search takes a
few seconds on a CPU. The same selection as a folder, without training:
`idlearn select` (idlearn/commands/select.py).

  for s in 0 1; do for a in snp random all; do
    python -m idlearn.main --config=configs/snp_mars.py:select=$a,seed=$s \
        --workdir=runs/snp_mars/$a-$s; done; done
  python -m idlearn.main --config=configs/snp_mars.py:smoke \
      --workdir=/tmp/smoke

Needs ../shared/data/mars_mini. Arg keys: select (snp | random | all), ids,
clusters, steps, seed (training and selection), smoke.
Expect: each arm ~ the quickstart's CPU time plus ~5 s of search; numbers
in experiments/snp/ once measured.
"""

import ml_collections

from configs import common, supervised_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, select="snp", ids=32, clusters=6, steps=300, seed=0, smoke=False,
  )  # fmt: skip
  if arg.select not in ("snp", "random", "all"):
    raise ValueError(f"select={arg.select!r}: expected snp, random or all")
  base = f"encoder=resnet18,width=16,seed={arg.seed}"
  c = supervised_pku_reid.get_config(base + (",smoke" if arg.smoke else ""))
  if not arg.smoke:
    c.total_steps, c.optim.warmup_steps = arg.steps, arg.steps // 10
    c.log_steps, c.ckpt_steps = 20, 50
  size, batch = tuple(c.input.image_size), c.input.global_batch_size
  # The selection's image folder (manual_dir is set by config.select).
  c.input = dict(
    name="image_folder", image_size=size, global_batch_size=batch,
    sampler="pk", k=c.input.k,
  )  # fmt: skip
  c.select = dict(
    name=arg.select,
    pool=dict(
      pku_reid=f"{common.PKU_REID}/train",
      market1501=f"{common.MARKET1501_MINI}/bounding_box_train",
    ),
    target=f"{common.shared('mars_mini')}/bbox_train",
    ids=0 if arg.select == "all" else arg.ids,
    clusters=arg.clusters, fill=True, seed=arg.seed,
    features=dict(encoder="pixels", image_size=(8, 4)),
  )  # fmt: skip
  c.evals.mars = common.mars_eval(size)
  return c

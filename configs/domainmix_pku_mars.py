r"""DomainMix: labelled PKU-Reid + unlabelled MARS mini, tested on MARS mini.

Wang et al., BMVC 2021. The labelled source is PKU-Reid's 62 training ids;
the unlabelled target is mars_mini/bbox_train (1,719 frames, labels
unused). Every `every_steps` (one pass over the target) the model embeds
the target images, clusters them into reliable pseudo identities
(k-reciprocal Jaccard distance k1=30, k2=6; DBSCAN eps 0.6, 4 samples;
independence / compactness filter; clusters of >= 5 kept), and each batch
then holds P x K source ids and P x K pseudo ids. Objective
(idlearn/methods/domainmix.py): identity CE (source classifier; target
centroid memory), batch-hard triplet, and the adversarial domain-balance
loss against a domain discriminator. Evaluated on the target domain's held-out
ids (MARS mini query / gallery tracklets) and on PKU-Reid's held-out ids.

  python -m idlearn.main --config=configs/domainmix_pku_mars.py \
      --workdir=runs/domainmix
  python -m idlearn.main --config=configs/domainmix_pku_mars.py:balance=0 \
      --workdir=runs/domainmix_nobalance
  python -m idlearn.main --config=configs/domainmix_pku_mars.py:target=False \
      --workdir=runs/domainmix_source_only
  python -m idlearn.main --config=configs/domainmix_pku_mars.py:smoke \
      --workdir=/tmp/smoke

Needs ../shared/data/mars_mini. Arg keys: steps, every_steps (0: one pass
over the target), eps, balance (domain-balance weight; 0 ablates it),
target (False: the source-only baseline, supervised_pku_reid's method on
PKU-Reid batches, evaluated the same way), p, k, seed, smoke.
Expect: measured numbers in experiments/domainmix/.
"""

import ml_collections

from configs import common, supervised_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, steps=600, every_steps=0, eps=0.6, balance=1.0, p=16, k=4,
    target=True, seed=0, smoke=False,
  )  # fmt: skip
  base = f"encoder=resnet18,width=16,p={arg.p},k={arg.k},seed={arg.seed}"
  c = supervised_pku_reid.get_config(base + (",smoke" if arg.smoke else ""))
  if not arg.smoke:
    c.total_steps = arg.steps
  if not arg.smoke:
    c.optim.warmup_steps = arg.steps // 10
  size, batch = tuple(c.input.image_size), c.input.global_batch_size
  # target=False: supervised_pku_reid's method as is, on the source alone
  if arg.target:
    # one pass over the target's 1,719 frames (half of each batch): 54 steps
    every = arg.every_steps or -(-common.mars_train_images() // (batch // 2))
    c.method = dict(name="domainmix", balance_weight=arg.balance)
    c.miner = dict(
      name="target_clusters", data="mars",
      manual_dir=common.shared("mars_mini"),
      every_steps=1 if arg.smoke else every, eps=arg.eps,
    )  # fmt: skip
  c.evals.mars = common.mars_eval(size)
  return c

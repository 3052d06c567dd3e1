r"""DomainMix: labelled PKU-Reid + unlabelled MARS mini, tested on MARS mini.

Wang et al., BMVC 2021. The labelled source is PKU-Reid's 62 training ids;
the unlabelled target is mars_mini/bbox_train (1,719 frames, labels
unused). Every `every_steps` (one pass over the target) the model embeds
the target images, clusters them into reliable pseudo identities
(k-reciprocal Jaccard distance k1=30, k2=6; DBSCAN eps 0.6, 4 samples;
independence / compactness filter; clusters of >= 5 kept), and each batch
then holds P x K source ids and P x K pseudo ids. Objective
(`objectives.domain`): identity CE (source classifier; target centroid
memory), batch-hard triplet, and the adversarial domain-balance loss
against a domain discriminator. Evaluated on the target domain's held-out
ids (MARS mini query / gallery tracklets) and on PKU-Reid's held-out ids.

  python -m idlearn.main --config=configs/domainmix_pku_mars.py \
      --workdir=runs/domainmix
  python -m idlearn.main --config=configs/domainmix_pku_mars.py:balance=0 \
      --workdir=runs/domainmix_nobalance
  python -m idlearn.main --config=configs/domainmix_pku_mars.py:target=False \
      --workdir=runs/domainmix_source_only
  python -m idlearn.main --config=configs/domainmix_pku_mars.py:smoke \
      --workdir=/tmp/smoke

Needs ../shared/data/mars_mini. Arg keys: steps, every_steps, eps,
balance (domain-balance weight; 0 ablates it), target (False: the
source-only baseline, supervised_pku_reid's loss on PKU-Reid batches,
evaluated the same way), p, k, seed, smoke.
Expect: measured numbers in experiments/domainmix/.
"""

import ml_collections

from configs import common, supervised_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, steps=600, every_steps=54, eps=0.6, balance=1.0, p=16, k=4,
    target=True, seed=0, smoke=False,
  )  # fmt: skip
  base = f"encoder=resnet18,width=16,p={arg.p},k={arg.k},seed={arg.seed}"
  c = supervised_pku_reid.get_config(base + (",smoke" if arg.smoke else ""))
  mars = common.shared("mars_mini")
  c.total_steps = 2 if arg.smoke else arg.steps
  c.optim.warmup_steps = 0 if arg.smoke else arg.steps // 10
  c.log_steps, c.ckpt_steps = (1, 1) if arg.smoke else (10, 100)
  size = tuple(c.input.image_size)
  # target=False: supervised_pku_reid's loss as is, on the source alone
  c.model.domain_classes, c.pseudo_labels = (2 if arg.target else 0), None
  if arg.target:
    c.loss = dict(
      name="domainmix", margin=0.3, label_smoothing=0.1, triplet_weight=1.0,
      ce_weight=1.0, disc_weight=1.0, balance_weight=arg.balance,
      memory_temp=0.05, memory_momentum=0.2,
    )  # fmt: skip
    c.pseudo_labels = dict(
      name="mars", split="train", manual_dir=mars, data_dir="",
      every_steps=1 if arg.smoke else arg.every_steps, target_fraction=0.5,
      feature="feat", batch_size=64, k1=30, k2=6, eps=arg.eps,
      min_samples=4, min_cluster_size=5,
    )  # fmt: skip
  c.evals.mars = dict(
    type="video_reid", data="mars", manual_dir=mars, image_size=size,
    batch_size=64, log_steps=0, feature="eval", metric="cosine",
  )  # fmt: skip
  return c

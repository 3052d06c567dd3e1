r"""LDE: labelled PKU-Reid + Market-1501 mini, tested on unseen MARS mini.

Latent domain expansion (idlearn/methods/lde.py; what is the paper's and
what is our reconstruction is written there: no official code was
found). Domain generalisation: two labelled source domains, the data sets
(PKU-Reid train: 62 ids, 992 images; Market-1501 mini bounding_box_train:
16 ids, 32 images), pooled into one image folder of 78 ids
(`config.select` "all", as configs/snp_mars.py's whole-pool arm) whose
identity folders `<data set>_<id>` give each image its domain
(`config.input.domain_pattern`). MARS mini is never seen in training.

Budget as configs/snp_mars.py: quarter-width ResNet-18 (last stride 1),
128x64, P x K = 16 x 4 batches, 300 steps, AdamW 1e-3 cosine, re-ID
augmentation. Arms (`method`):
  lde         decoupled identity / domain features, domain-expanded CE
              (lam ramped 0 -> 0.5), triplet, domain CE, lifting-suppression
  supervised  the union without LDE: triplet + CE with a BNNeck
              (= configs/snp_mars.py:select=all)
Evaluated on MARS mini query / gallery tracklets and PKU-Reid's held-out
ids.

  for s in 0 1; do for m in lde supervised; do
    python -m idlearn.main \
        --config=configs/lde_pku_market_mars.py:method=$m,seed=$s \
        --workdir=runs/lde_$m-$s; done; done
  python -m idlearn.main --config=configs/lde_pku_market_mars.py:lam=0 \
      --workdir=runs/lde_nolam-0     # ablation: no expansion
  python -m idlearn.main --config=configs/lde_pku_market_mars.py:smoke \
      --workdir=/tmp/smoke

Needs ../shared/data/mars_mini. Arg keys: method (lde | supervised), lam,
lift (lifting-suppression weight), domain (domain CE weight), steps, seed,
smoke.
Expect: ~4 min a run on the 2-core CPU; numbers in experiments/lde/.
"""

import ml_collections

from configs import common, snp_mars

DOMAIN_PATTERN = r"^(pku_reid|market1501)_"  # the pool's folder prefixes


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, method="lde", lam=0.5, lift=1.0, domain=1.0, steps=300, seed=0,
    smoke=False,
  )  # fmt: skip
  if arg.method not in ("lde", "supervised"):
    raise ValueError(f"method={arg.method!r}: expected lde or supervised")
  c = snp_mars.get_config(
    f"select=all,steps={arg.steps},seed={arg.seed}"
    + (",smoke" if arg.smoke else "")
  )
  c.input.domain_pattern = DOMAIN_PATTERN
  if arg.method == "lde":
    c.method = dict(
      name="lde", lam=arg.lam, lift_weight=arg.lift,
      domain_weight=arg.domain,
    )  # fmt: skip
  return c

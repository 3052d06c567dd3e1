r"""Decoupled Mixup on PKU-Reid: the supervised recipe plus a mixed view.

The quickstart recipe (configs/quickstart.py: ResNet-18 at width 16 from
scratch, 20 epochs of P16 x K4, batch-hard triplet + label-smoothed CE on
a BNNeck) on the clean view, plus a mixed view lam x + (1 - lam) x[perm]
(lam ~ Beta(alpha, alpha) per batch, perm over the global batch) whose
classifier logits train with the decoupled mixup CE (Liu et al., NeurIPS
2023; openmixup's ImageNet setting: eta 0.1, mode both, eta_i = eta lam_i).
See idlearn/methods/decoupled_mixup.py. Arms (same budget, same seeds):

  # baseline: no mixed view (alpha=0 is the supervised method exactly)
  python -m idlearn.main \
      --config=configs/decoupled_mixup_pku_reid.py:alpha=0,seed=0 \
      --workdir=runs/dm_pku_reid/base_s0
  # mixup: plain mixup CE on the mixed view
  python -m idlearn.main \
      --config=configs/decoupled_mixup_pku_reid.py:eta=0,seed=0 \
      --workdir=runs/dm_pku_reid/mixup_s0
  # mixup + DM (default: alpha=1, eta=0.1)
  python -m idlearn.main \
      --config=configs/decoupled_mixup_pku_reid.py:seed=0 \
      --workdir=runs/dm_pku_reid/dm_s0
  python -m idlearn.main \
      --config=configs/decoupled_mixup_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Repeat each with seed=1, 2. A baseline run takes about as long as the
quickstart (~2 CPU minutes); the mixed arms forward two views per step
(~2x).

Arg keys: alpha, eta, eta_mode (both | less | more), lam_power,
mix_weight, ce_weight (the clean view's CE; 0: the classifier sees only
mixed images, as in openmixup), encoder, width, epochs, seed, smoke.
"""

import ml_collections

from configs import common, supervised_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, alpha=1.0, eta=0.1, eta_mode="both", lam_power=1.0, mix_weight=1.0,
    ce_weight=1.0, encoder="resnet18", width=16, epochs=20, seed=0,
    smoke=False,
  )  # fmt: skip
  base = f"encoder={arg.encoder},width={arg.width},epochs={arg.epochs}"
  base += f",seed={arg.seed}" + (",smoke" if arg.smoke else "")
  c = supervised_pku_reid.get_config(base)
  c.method = dict(
    name="decoupled_mixup", loss="triplet_ce", neck="bnneck",
    ce_weight=arg.ce_weight, alpha=arg.alpha, eta=arg.eta,
    eta_mode=arg.eta_mode, lam_power=arg.lam_power,
    mix_weight=arg.mix_weight,
  )  # fmt: skip
  if not arg.smoke:  # as configs/quickstart.py
    c.log_steps, c.ckpt_steps = 20, 50
  return c

r"""Barlow Twins, or Mixed Barlow Twins, self-supervised on PKU-Reid.

Barlow Twins (Zbontar et al., 2021): the cross-correlation of the two
views' standardised projections is pushed to the identity. Mixed Barlow
Twins (Bandara et al., 2023; `mixed=True`, or
configs/mixed_barlow_twins_pku_reid.py) adds a third, mixed view
lam * v1 + (1 - lam) * v2[perm] (lam ~ Beta(1, 1)) and the regulariser
that its cross-correlations with each view interpolate the views' own,
against overfitting on small data. Views, encoder, budget and evaluation
as configs/simclr_pku_reid.py; projector 3 layers, 1024 wide.

  python -m idlearn.main --config=configs/barlow_twins_pku_reid.py \
      --workdir=runs/barlow_twins_pku_reid
  python -m idlearn.main --config=configs/barlow_twins_pku_reid.py:mixed \
      --workdir=runs/mixed_barlow_twins_pku_reid

Arg keys: mixed, mix_scale, lambda_offdiag, views, epochs, batch, seed,
smoke. Expect: measured numbers in experiments/barlow_twins_pku_reid/.
"""

import ml_collections

from configs import common, simclr_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, mixed=False, mix_scale=5.0, lambda_offdiag=5e-3, views="reid_bss",
    epochs=20, batch=64, seed=0, smoke=False,
  )  # fmt: skip
  base = f"views={arg.views},epochs={arg.epochs},batch={arg.batch}"
  base += f",seed={arg.seed}" + (",smoke" if arg.smoke else "")
  c = simclr_pku_reid.get_config(base)
  # The smoke variant keeps simclr's small projector.
  hidden, out = (32, 16) if arg.smoke else (1024, 1024)
  c.method = dict(
    name="mixed_barlow_twins" if arg.mixed else "barlow_twins",
    lambda_offdiag=arg.lambda_offdiag, proj_hidden=hidden, proj_out=out,
    proj_layers=3,
  )  # fmt: skip
  if arg.mixed:
    c.method.mix_scale = arg.mix_scale
  return c

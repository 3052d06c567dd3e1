r"""Mixed Barlow Twins on PKU-Reid: configs/barlow_twins_pku_reid.py:mixed.

  python -m idlearn.main --config=configs/mixed_barlow_twins_pku_reid.py \
      --workdir=runs/mixed_barlow_twins_pku_reid
  python -m idlearn.main \
      --config=configs/mixed_barlow_twins_pku_reid.py:smoke --workdir=/tmp/s

Arg keys: as configs/barlow_twins_pku_reid.py (mixed is fixed here).
"""

import ml_collections

from configs import barlow_twins_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return barlow_twins_pku_reid.get_config(f"mixed,{arg}" if arg else "mixed")

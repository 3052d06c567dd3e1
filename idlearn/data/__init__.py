"""Identity datasets (TFDS builders over the user's files) and grain loaders.

`prepare(name)` builds a dataset once; `make_train_loader` feeds training
batches (random, P x K or consecutive-frame pairs), resumable through the
iterator's `get_state`/`set_state`; `load_split`, `reid_eval_sets` and
`verification_pairs` give evaluation data.
"""

from idlearn.data.datasets import BUILDERS, build_log, prepare
from idlearn.data.loader import domain_labels, make_train_loader
from idlearn.data.sources import (
  load_split,
  reid_eval_sets,
  split_meta,
  verification_pairs,
)

__all__ = [
  "BUILDERS",
  "build_log",
  "load_split",
  "domain_labels",
  "make_train_loader",
  "prepare",
  "reid_eval_sets",
  "split_meta",
  "verification_pairs",
]

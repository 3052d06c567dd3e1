"""Objectives: pure functions of embeddings returning (loss, aux).

Every loss returns a float32 scalar mean over the global batch and a flat
dict of scalar diagnostics; hyper-parameters are keyword-only; losses that
take `axis_name` run inside `shard_map` (see idlearn.sharding) and
give the single-device result on the concatenated batch.
"""

from idlearn.losses._common import l2_normalize
from idlearn.losses.classification import identity_ce
from idlearn.losses.contrastive import dcl, dclw, decoupled_softmax, info_nce
from idlearn.losses.margin import arcface, cosface
from idlearn.losses.metric import triplet
from idlearn.losses.partial_fc import partial_fc
from idlearn.losses.redundancy import barlow_twins

__all__ = [
  "arcface",
  "barlow_twins",
  "cosface",
  "dcl",
  "dclw",
  "decoupled_softmax",
  "identity_ce",
  "info_nce",
  "l2_normalize",
  "partial_fc",
  "triplet",
]

# Seed-method objectives (added by their module owners below).
from idlearn.losses.distillation import (  # noqa: E402
  cion,
  cion_num_instances,
  dino,
  update_center,
)
from idlearn.losses.domain import (  # noqa: E402
  camera_diversity,
  domain_balance,
  domain_classification,
)
from idlearn.losses.domain_expansion import (  # noqa: E402
  covariance_update,
  expanded_ce,
  lift_suppress,
)
from idlearn.losses.hydra import hydra  # noqa: E402
from idlearn.losses.mixing import (  # noqa: E402
  decoupled_mixup,
  metrix,
  mixed_barlow_twins_regularizer,
  sample_mix_partners,
)
from idlearn.losses.mutual import (  # noqa: E402
  soft_cross_entropy,
  soft_margin_triplet,
  soft_triplet,
)
from idlearn.losses.mutual_info import (  # noqa: E402
  club_init,
  club_log_likelihood,
  club_q,
  club_upper_bound,
)
from idlearn.losses.reliability import reliability_contrastive  # noqa: E402
from idlearn.losses.secla import secla, secla_bootstrap  # noqa: E402
from idlearn.losses.sie import sie, vicreg  # noqa: E402

__all__ += [
  "camera_diversity",
  "cion",
  "cion_num_instances",
  "club_init",
  "club_log_likelihood",
  "club_q",
  "club_upper_bound",
  "covariance_update",
  "decoupled_mixup",
  "dino",
  "domain_balance",
  "domain_classification",
  "expanded_ce",
  "hydra",
  "lift_suppress",
  "metrix",
  "mixed_barlow_twins_regularizer",
  "reliability_contrastive",
  "sample_mix_partners",
  "secla",
  "secla_bootstrap",
  "sie",
  "soft_cross_entropy",
  "soft_margin_triplet",
  "soft_triplet",
  "update_center",
  "vicreg",
]

from idlearn.losses.fsfm import (  # noqa: E402
  masked_reconstruction,
  negative_cosine,
  patchify,
)

__all__ += ["masked_reconstruction", "negative_cosine", "patchify"]

r"""Hydra on PKU-Reid: contrastive learning from arbitrary pairs of identities.

Hydra / SimLAP (Wu et al., arXiv 2410.18200; idlearn/methods/hydra.py):
P16 x K4 batches of one augmented view, projector + a learned gate per
pair of identities, gated multi-positive InfoNCE (t = 0.1), retrieval
with the encoder's pooled feature. The budget of configs/simclr_pku_reid.py
(quarter-width ResNet-18, last stride 1, 128x64, 20 epochs of 64 images,
AdamW 1e-3 / wd 1e-4 with 10% warmup and cosine, the `reid_bss` views,
the same evaluation on the 12 held-out ids); a step forwards 64 images
where SimCLR's forwards 2 x 64. Besides retrieval, every arm reports the
effective rank of the retrieval feature on the val images
(eval/rank/effective_rank and _unit: exp of the entropy of the normalised
singular values of the centred features, of unit rows; see
idlearn/evaluators/effective_rank.py). Arms (same seeds):

  # Hydra: arbitrary pairs of identities as positives (the paper's setting)
  python -m idlearn.main --config=configs/hydra_pku_reid.py:seed=0 \
      --workdir=runs/hydra_pku_reid/arbitrary_s0
  python -m idlearn.main --config=configs/hydra_pku_reid.py:seed=1 \
      --workdir=runs/hydra_pku_reid/arbitrary_s1
  # supervised contrastive (SupCon): the pair is the identity itself
  python -m idlearn.main \
      --config=configs/hydra_pku_reid.py:pairs=identical,seed=0 \
      --workdir=runs/hydra_pku_reid/identical_s0
  python -m idlearn.main \
      --config=configs/hydra_pku_reid.py:pairs=identical,seed=1 \
      --workdir=runs/hydra_pku_reid/identical_s1
  # SimCLR baseline: configs/simclr_pku_reid.py:seed=S (labels unused)
  # with the effective-rank evaluator added
  python -m idlearn.main \
      --config=configs/hydra_pku_reid.py:method=simclr,seed=0 \
      --workdir=runs/hydra_pku_reid/simclr_s0
  python -m idlearn.main \
      --config=configs/hydra_pku_reid.py:method=simclr,seed=1 \
      --workdir=runs/hydra_pku_reid/simclr_s1
  python -m idlearn.main --config=configs/hydra_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Arg keys: method (hydra | simclr: the baseline), pairs (arbitrary |
identical | distinct), gate (fuse | product | open: no filter),
temperature, views (a configs/simclr_pku_reid.py preset), epochs, batch,
k (images per identity), encoder, width, proj_out (the gate's width),
probe (online linear probe on the frozen feature), seed, smoke.
"""

import ml_collections

from configs import common, simclr_pku_reid


def _effective_rank(size) -> dict:
  return dict(type="effective_rank", data="pku_reid", image_size=size,
              split="val")  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, method="hydra", pairs="arbitrary", gate="fuse", temperature=0.1,
    views="reid_bss", epochs=20, batch=64, k=4, encoder="resnet18",
    width=16, proj_out=256, probe=False, seed=0, smoke=False,
  )  # fmt: skip
  if arg.method not in ("hydra", "simclr"):
    raise ValueError(f"method={arg.method!r}: expected hydra or simclr")
  size = common.SMOKE_SIZE if arg.smoke else (128, 64)
  if arg.method == "simclr":  # the baseline, unchanged but for the rank
    base = f"views={arg.views},epochs={arg.epochs},batch={arg.batch}"
    base += f",encoder={arg.encoder},width={arg.width},seed={arg.seed}"
    c = simclr_pku_reid.get_config(base + (",smoke" if arg.smoke else ""))
    c.evals.rank = _effective_rank(size)
    return c
  if arg.views not in simclr_pku_reid.VIEWS:
    raise ValueError(
      f"views={arg.views!r}: expected one of {sorted(simclr_pku_reid.VIEWS)}"
    )
  batch = 16 if arg.smoke else arg.batch
  steps = arg.epochs * common.pku_reid_train_images() // arg.batch
  c = common.run(seed=arg.seed, total_steps=steps)
  c.input = common.pku_reid_input(size, batch=batch, sampler="pk", k=arg.k)
  c.views = {"image": dict(size=size, **simclr_pku_reid.VIEWS[arg.views])}
  c.model = common.resnet(arg.encoder, arg.width)
  c.method = dict(
    name="hydra", pairs=arg.pairs, gate=arg.gate,
    temperature=arg.temperature, proj_hidden=512, proj_out=arg.proj_out,
    probe=arg.probe,
  )  # fmt: skip
  c.optim = common.adamw(1e-3, 1e-4, c.total_steps)
  c.evals = common.pku_reid_eval(size)
  c.evals.rank = _effective_rank(size)
  if arg.smoke:
    common.smoke(c)
    c.method.update(proj_hidden=32, proj_out=16, gate_embed=16, gate_hidden=32)
  return c

r"""ISR (identity-seeking SSL) on MARS mini tracklets, no identity labels.

Dou et al., ICCV 2023. Each batch holds two frames `frame_gap` apart from
each of B tracklet positions (sampler "frame_pairs"): frame A's B person
crops and frame B's. The objective matches A's instances to B's by
maximum-weight bipartite matching of their cosine similarities (exact
Hungarian on the host, or Sinkhorn on device), takes the partners as
positives and weights each pair by its reliability
(`losses.reliability_contrastive`). Training uses the 32 tracklets of
mars_mini/bbox_train (1,719 frames, 16 ids; labels unused); evaluation is
tracklet retrieval on the gtPepper query / gallery tracklets (16 other
ids, frame features averaged, Market-1501 protocol).

  python -m idlearn.main --config=configs/isr_mars.py --workdir=runs/isr_mars
  python -m idlearn.main --config=configs/isr_mars.py:smoke --workdir=/tmp/s

Needs ../shared/data/mars_mini (or $IDLEARN_SHARED_DATA/mars_mini).
Arg keys: matching (hungarian | sinkhorn), sigma, temperature, frame_gap,
steps, batch, views, seed, smoke. Expect: measured numbers in
experiments/isr_mars/README.md.
"""

import ml_collections

from configs import common, simclr_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, matching="hungarian", sigma=0.5, temperature=0.1, frame_gap=8,
    steps=400, batch=64, views="reid_bss", seed=0, smoke=False,
  )  # fmt: skip
  base = f"views={arg.views},batch={arg.batch},seed={arg.seed}"
  c = simclr_pku_reid.get_config(base + (",smoke" if arg.smoke else ""))
  c.total_steps = 2 if arg.smoke else arg.steps
  c.optim.warmup_steps = 0 if arg.smoke else arg.steps // 10
  size = tuple(c.input.image_size)
  c.input = common.mars_input(
    size, batch=c.input.global_batch_size, sampler="frame_pairs",
    frame_gap=arg.frame_gap,
  )  # fmt: skip
  view = dict(c.views["global"], count=1)
  # frame A of a tracklet, and frame B `frame_gap` later
  c.views = dict(anchor=view, partner=dict(view, frame=1))
  proj = {k: v for k, v in c.method.items() if k.startswith("proj_")}
  c.method = dict(
    name="isr", temperature=arg.temperature, sigma=arg.sigma,
    matching=arg.matching, **proj,
  )  # fmt: skip
  c.evals = dict(mars=common.mars_eval(size))
  return c

r"""Cross-camera ISR on PKU-Reid: positives mined across cameras, no labels.

ISR's positive mining (Dou et al., ICCV 2023: maximum-weight bipartite
matching between the person instances of two frames, reliability-guided
contrastive loss) applied to the two cameras of still images instead of
two video frames: each batch row holds a training image and a random image
of the other camera (sampler "camera_pairs"; camera ids are used, identity
labels are not), the two sides are matched by the Hungarian algorithm
with same-camera pairs forbidden, and matched pairs are pulled together,
weighted by their reliability. The camera-specific background cannot
explain a cross-camera match, so the matching has to rely on the person.
Encoder, views, budget and evaluation as configs/simclr_pku_reid.py.

  python -m idlearn.main --config=configs/isr_pku_reid.py \
      --workdir=runs/isr_pku_reid
  python -m idlearn.main --config=configs/isr_pku_reid.py:smoke \
      --workdir=/tmp/smoke

mining=split (the default) matches each camera's images to the other
camera's over the whole training split every epoch (`config.miner`,
features camera-centred) instead of within each batch, and adds SimCLR's
instance term between two views of each image (`instance` weight) so that
the features improve from the start, when mined pairs are still random.

Arg keys: mining (split | batch), keep (split mining: the fraction of the
most similar pairs kept), instance, matching (batch mining:
hungarian | sinkhorn), sigma, temperature, min_similarity, epochs, batch,
views, seed, smoke. Expect: measured numbers in
experiments/ssl_pku_reid/README.md.
"""

import ml_collections

from configs import common, simclr_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, mining="split", keep=1.0, instance=1.0, matching="hungarian",
    sigma=0.5, temperature=0.1, min_similarity=-1.0, epochs=20, batch=64,
    views="reid_bss", seed=0, smoke=False,
  )  # fmt: skip
  if arg.mining not in ("split", "batch"):
    raise ValueError(f"mining={arg.mining!r}: expected split or batch")
  base = f"views={arg.views},epochs={arg.epochs},batch={arg.batch}"
  base += f",seed={arg.seed}" + (",smoke" if arg.smoke else "")
  c = simclr_pku_reid.get_config(base)
  c.input.sampler = "camera_pairs"
  view = dict(c.views["global"], count=1)
  # anchor: the image (frame 0 of a pair); partner: its pair (frame 1)
  c.views = dict(anchor=view, partner=dict(view, frame=1))
  proj = {k: v for k, v in c.method.items() if k.startswith("proj_")}
  c.method = dict(
    name="isr", temperature=arg.temperature, sigma=arg.sigma,
    matching=arg.matching, min_similarity=arg.min_similarity,
    cross_camera=True, **proj,
  )  # fmt: skip
  if arg.mining == "split":
    steps_per_epoch = (
      2 if arg.smoke else common.pku_reid_train_images() // arg.batch
    )
    c.miner = dict(
      name="camera_pairs", every_steps=steps_per_epoch,
      min_similarity=arg.min_similarity, keep_fraction=arg.keep,
    )  # fmt: skip
    c.method.matching, c.method.cross_camera = "given", False
    # two views of the image (the instance term between them) and one of
    # its mined partner
    c.views.anchor.count = 2
    c.method.instance_weight = arg.instance
  return c

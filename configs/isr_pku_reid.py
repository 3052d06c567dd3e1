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
camera's over the whole training split every epoch (`config.pair_mining`,
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
  c.loss = dict(
    name="isr", on="proj", temperature=arg.temperature, sigma=arg.sigma,
    matching=arg.matching, min_similarity=arg.min_similarity,
    cross_camera=True, pair_views=(0, 1), instance_weight=0.0,
  )  # fmt: skip
  c.pair_mining = None
  if arg.mining == "split":
    steps_per_epoch = (
      2 if arg.smoke else simclr_pku_reid.TRAIN_IMAGES // arg.batch
    )
    c.pair_mining = dict(
      every_steps=steps_per_epoch, feature="eval", camera_centering=True,
      min_similarity=arg.min_similarity, keep_fraction=arg.keep,
      batch_size=64,
    )  # fmt: skip
    c.loss.matching, c.loss.cross_camera = "given", False
    # views a, b: two views of the image; c: its mined partner
    view = dict(c.views.a)
    c.views = dict(a=dict(view), b=dict(view), c=dict(view, frame=1))
    c.loss.pair_views = (0, 2)
    c.loss.instance_weight = arg.instance
  return c

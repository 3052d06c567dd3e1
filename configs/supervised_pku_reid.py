r"""Supervised re-ID on PKU-Reid: batch-hard triplet + identity CE, BNNeck.

The "bag of tricks" recipe (Luo et al., 2019) from scratch: P x K batches,
triplet loss on the pooled embedding, label-smoothed identity cross-entropy
on the BNNeck feature, retrieval with the BNNeck feature. Trains on the 62
bundled PKU-Reid training ids, evaluates on the 12 held-out ids (every val
image a query against the others, Market-1501 protocol).

  python -m idlearn.main --config=configs/supervised_pku_reid.py \
      --workdir=runs/supervised_pku_reid
  python -m idlearn.main --config=configs/supervised_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Arg keys: encoder, width (ResNet stage-1 width; 64 = torchvision), epochs,
height, width_px, p, k, bss (batch style standardisation probability),
init (start the encoder from weights: a torchvision / torchreid .pth or
.safetensors of that architecture, or an idlearn encoder folder, e.g.
`:width=64,init=resnet18-f37072fd.pth` for ImageNet weights), seed, smoke.
configs/quickstart.py is this recipe on a 5-minute CPU budget; measured
numbers in experiments/quickstart/README.md.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, encoder="resnet18", width=64, epochs=40, height=128, width_px=64,
    p=16, k=4, bss=0.0, init="", seed=0, smoke=False,
  )  # fmt: skip
  size = common.SMOKE_SIZE if arg.smoke else (arg.height, arg.width_px)
  batch = 16 if arg.smoke else arg.p * arg.k
  steps = arg.epochs * common.pku_reid_train_images() // batch
  c = common.run(seed=arg.seed, total_steps=steps)
  c.input = common.pku_reid_input(size, batch=batch, sampler="pk", k=arg.k)
  # re-ID augmentation: flip, pad 10 px per 256 rows and crop back, erasing
  pad = max(2, 10 * size[0] // 256)
  c.views = dict(image=dict(size=size, flip=0.5, pad=pad, erasing=0.5))
  if arg.bss > 0:  # batch style standardisation (camera colour / light)
    c.views.image.style_standardization = arg.bss
  c.model = common.resnet(arg.encoder, arg.width)
  c.model.init = arg.init  # pretrained encoder: .pt / .safetensors / folder
  c.method = dict(name="supervised", loss="triplet_ce", neck="bnneck")
  c.optim = common.adamw(1e-3, 5e-4, c.total_steps)
  c.evals = common.pku_reid_eval(size)
  if arg.smoke:
    common.smoke(c)
  return c

r"""ArcFace / CosFace on a million-identity face set, centres sharded.

WebFace4M/12M/42M, MS1MV3, Glint360K, VGGFace2... as one folder per
identity (`<root>/<identity>/<image>`, the `image_folder` data set), with
the class centres split over the devices (Partial FC, An et al. 2021): each
device holds 1/n of them and their optimizer state, and sample_rate < 1
keeps only that share of each device's centres in each step's softmax
(every positive included). Verification on LFW (its pairs.txt, 10 folds)
when lfw= names its folder; otherwise on the bundled AT&T subjects (a sanity
check, not a benchmark).

  python -m idlearn.main \
      --config=configs/arcface_webface.py:root=/data/webface4m,lfw=/data/lfw \
      --workdir=runs/arcface_webface
  python -m idlearn.main --config=configs/arcface_webface.py:smoke \
      --workdir=/tmp/smoke

The smoke run reads the bundled AT&T faces (40 identity folders) through
`image_folder` (root= is ignored), so the same path a million identities
take runs here in seconds.

Arg keys: root (default data/webface), lfw, loss (arcface | cosface),
steps, batch, sample_rate, encoder, width, size (square side, px), lr,
seed, smoke. Defaults follow insightface's WebFace recipes (112x112,
margin 0.5, scale 64, batch 128 per device x 8; they sample at rate 0.3 on
WebFace42M, the default here is 1.0: pass sample_rate= past ~1M
identities), with the ResNet-50 of idlearn.encoders in place of their
IResNet.
"""

import os

import ml_collections

from configs import common

BUNDLED_FACES = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  "idlearn", "data", "bundled", "att_faces",
)  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, root="data/webface", lfw="", loss="arcface", steps=200_000, batch=1024,
    sample_rate=1.0, encoder="resnet50", width=64, size=112, lr=1e-3,
    seed=0, smoke=False,
  )  # fmt: skip
  if arg.loss not in ("arcface", "cosface"):
    raise ValueError(f"loss={arg.loss!r}: expected arcface or cosface")
  root = BUNDLED_FACES if arg.smoke else arg.root
  size = (32, 32) if arg.smoke else (arg.size, arg.size)
  c = common.run(seed=arg.seed, total_steps=arg.steps)
  c.input = dict(
    name="image_folder", manual_dir=root, image_size=size,
    global_batch_size=16 if arg.smoke else arg.batch, sampler="random",
  )  # fmt: skip
  c.views = dict(image=dict(size=size, flip=0.5))
  c.model = common.resnet(arg.encoder, arg.width, last_stride=2)
  c.method = dict(
    name=arg.loss, neck_dim=16 if arg.smoke else 512, scale=64.0,
    shard_classes=True, sample_rate=arg.sample_rate,
  )  # fmt: skip
  c.optim = common.adamw(arg.lr, 5e-4, c.total_steps)
  verify = dict(type="verification", image_size=size, flip_test=True)
  if arg.lfw:
    c.evals = dict(lfw=dict(verify, data="lfw", manual_dir=arg.lfw))
  else:
    c.evals = dict(att_faces=dict(verify, data="att_faces"))
  if arg.smoke:
    common.smoke(c)
  return c

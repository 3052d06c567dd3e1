r"""Metrix on PKU-Reid: a metric loss with mixed examples and mixed targets.

The quickstart budget and data (configs/quickstart.py: ResNet-18 at width
16 from scratch, 20 epochs of P16 x K4 PKU-Reid batches, the same
augmentation and evaluation) with a 128-d linear embedding trained by
Metrix (Venkataramanan et al., ICLR 2022; official settings: contrastive
loss, margin 0.5, lam ~ Beta(2, 2) per batch, mixed-loss weight 0.4);
see idlearn/methods/metrix.py. Also reports the paper's utilization
(eval/utilization/utilization: mean squared distance of each val image to
its nearest training image, unit features; lower = better used space).
Arms (same budget, same seeds):

  # unmixed: the metric loss alone
  python -m idlearn.main \
      --config=configs/metrix_pku_reid.py:mix=none,seed=0 \
      --workdir=runs/metrix_pku_reid/none_s0
  # Metrix, input mixing (default) / embedding mixing
  python -m idlearn.main \
      --config=configs/metrix_pku_reid.py:seed=0 \
      --workdir=runs/metrix_pku_reid/input_s0
  python -m idlearn.main \
      --config=configs/metrix_pku_reid.py:mix=embedding,seed=0 \
      --workdir=runs/metrix_pku_reid/embedding_s0
  python -m idlearn.main \
      --config=configs/metrix_pku_reid.py:smoke \
      --workdir=/tmp/smoke

Repeat each with seed=1, 2. Unmixed and embedding runs cost about the
quickstart (~2 CPU minutes); input mixing forwards two views (~2x).

Arg keys: mix (none | input | embedding), loss (contrastive |
multi_similarity), mix_alpha, mix_weight, margin, dim (embedding width),
encoder, width, epochs, seed, smoke.
"""

import ml_collections

from configs import common, supervised_pku_reid


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, mix="input", loss="contrastive", mix_alpha=2.0, mix_weight=0.4,
    margin=0.5, dim=128, encoder="resnet18", width=16, epochs=20, seed=0,
    smoke=False,
  )  # fmt: skip
  base = f"encoder={arg.encoder},width={arg.width},epochs={arg.epochs}"
  base += f",seed={arg.seed}" + (",smoke" if arg.smoke else "")
  c = supervised_pku_reid.get_config(base)
  c.method = dict(
    name="metrix", loss=arg.loss, mix=arg.mix, mix_alpha=arg.mix_alpha,
    mix_weight=arg.mix_weight, margin=arg.margin, neck="embedding",
    neck_dim=16 if arg.smoke else arg.dim,
  )  # fmt: skip
  size = tuple(c.input.image_size)
  c.evals.utilization = dict(
    type="utilization", data="pku_reid", image_size=size, test_split="val"
  )
  if not arg.smoke:  # as configs/quickstart.py
    c.log_steps, c.ckpt_steps = 20, 50
  return c

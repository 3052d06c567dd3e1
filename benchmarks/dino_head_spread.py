r"""Why CION's DINO head needs BatchNorm on a from-scratch encoder.

For configs/cion_mars.py's untrained model (seeds 0..2), on 64 random
mars_mini/bbox_train frames: the mean pairwise cosine of the encoder's
embeddings, the spread of the DINO head's logits across the batch (std
over images, mean over prototypes) and the entropy of the teacher's
targets softmax((logits - batch mean) / 0.04), with and without
BatchNorm in the head (`config.method.head_bn`). When the spread is below
the teacher temperature the centred targets are near uniform (log K) and
there is nothing to distil. Measured numbers: experiments/cion_mars/.

  python benchmarks/dino_head_spread.py
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.getcwd())  # configs/ live in the repository

from configs import cion_mars, common  # noqa: E402
from idlearn import (  # noqa: E402
  data,  # noqa: E402
  encoders,
  fields,
)
from idlearn.methods.dino import Cion, DinoNet  # noqa: E402

_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _entropy(p: np.ndarray) -> float:
  return float(-(p * np.log(np.maximum(p, 1e-30))).sum(-1).mean())


def main() -> None:
  config = cion_mars.get_config()
  m = fields.resolve(config.method, {"name": "", **Cion.FIELDS}, "method")
  teacher_temp = m["teacher_temp"]
  frames = data.load_split(
    "mars",
    "train",
    image_size=tuple(config.input.image_size),
    manual_dir=common.shared("mars_mini"),
  )["image"]
  k = m["prototypes"]
  print(
    f"{'seed':>4} {'head BN':>7} {'emb cos':>8} {'logit spread':>12} "
    f"{'teacher entropy':>15}  (uniform {np.log(k):.2f}, T={teacher_temp})"
  )
  for seed in range(3):
    pick = np.random.default_rng(seed).choice(len(frames), 64, replace=False)
    x = (frames[pick].astype(np.float32) / 255.0 - _MEAN) / _STD
    for bn in (False, True):
      model = DinoNet(
        encoder=encoders.get_encoder(
          config.model.encoder, **config.model.encoder_kw
        ),
        hidden=m["head_hidden"], bottleneck=m["head_bottleneck"],
        layers=m["head_layers"], prototypes=k, head_bn=bn,
      )  # fmt: skip
      variables = model.init(jax.random.PRNGKey(seed), x)
      out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
      emb = np.asarray(out["emb"], np.float64)
      emb /= np.linalg.norm(emb, axis=1, keepdims=True)
      logits = np.asarray(out["dino"], np.float64)
      centred = (logits - logits.mean(0)) / teacher_temp
      q = np.exp(centred - centred.max(1, keepdims=True))
      q /= q.sum(1, keepdims=True)
      print(
        f"{seed:>4} {str(bn):>7} {(emb @ emb.T).mean():8.3f} "
        f"{logits.std(0).mean():12.4f} {_entropy(q):15.2f}"
      )


if __name__ == "__main__":
  main()

"""Features of uint8 images from a retrieval encoder, batched over devices.

`FeatureFn` compiles its prediction once (per image shape) and is reused by
every evaluation, every miner refresh and `idlearn.load`'s embedder, so the
features a run evaluates with are the features its users get.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from idlearn import sharding
from idlearn.augment import preprocess
from idlearn.evaluators.features import unit


class FeatureFn:
  """uint8 [n, H, W, 3] -> {"emb", "eval"} float32 [n, d] of `module`.

  Args:
    module: a `encoders.Backbone` (or any module returning a dict of [n, d]
      outputs) applied in inference mode.
    image_size: (h, w) the network sees (images of another size are
      resized on device: bilinear, antialiased).
    batch_size: images per call, rounded up to a multiple of the devices.
    mesh: the data mesh (default: all devices).
    outputs: which outputs to return.
  """

  def __init__(
    self,
    module: nn.Module,
    *,
    image_size: tuple[int, int],
    batch_size: int = 64,
    mesh: Any = None,
    outputs: tuple[str, ...] = ("emb", "eval"),
  ):
    self.mesh = mesh or sharding.make_data_mesh()
    n_dev = self.mesh.shape[sharding.DATA_AXIS]
    self.batch_size = -(-batch_size // n_dev) * n_dev
    self.size, self.outputs = tuple(image_size), tuple(outputs)
    rep = sharding.replicated(self.mesh)

    def predict(variables, x):
      out = module.apply(variables, preprocess(x, self.size), train=False)
      return {
        k: jax.lax.with_sharding_constraint(out[k].astype(jnp.float32), rep)
        for k in self.outputs
      }

    self._predict = jax.jit(predict)
    self._rows = sharding.batch_sharding(self.mesh)

  def __call__(
    self,
    variables: Mapping[str, Any],
    images: np.ndarray,
    *,
    flip: bool = False,
  ) -> dict[str, np.ndarray]:
    """Features of `images` (every process passes the same images).

    Args:
      variables: the module's {"params", "batch_stats"?}.
      images: uint8 [n, H, W, 3].
      flip: return the sum of the unit features of each image and of its
        horizontal mirror (test-time flip).
    Returns:
      {name: float32 [n, d]} for each of `outputs`.
    """
    feats = self._run(variables, images)
    if flip:
      mirror = self._run(variables, images[:, :, ::-1])
      feats = {k: unit(v) + unit(mirror[k]) for k, v in feats.items()}
    return feats

  def _run(self, variables, images):
    bs, out = self.batch_size, {k: [] for k in self.outputs}
    for i in range(0, len(images), bs):
      chunk = np.ascontiguousarray(images[i : i + bs])
      # Padded to one batch shape: one compilation for the whole split.
      pad = np.zeros((bs - len(chunk), *chunk.shape[1:]), chunk.dtype)
      x = np.concatenate([chunk, pad])
      x = jax.make_array_from_callback(
        x.shape, self._rows, lambda idx, x=x: x[idx]
      )
      got = sharding.to_host(self._predict(variables, x))
      for k in self.outputs:
        out[k].append(got[k][: len(chunk)])
    return {
      k: np.concatenate(v) if v else np.zeros((0, 0), np.float32)
      for k, v in out.items()
    }

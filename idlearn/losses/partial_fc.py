"""Margin softmax over class centres sharded across devices (Partial FC).

An, Deng et al., "Partial FC: Training 10 Million Identities on a Single
Machine", ICCVW 2021 / insightface's `PartialFC`. With millions of
identities the [C, d] class centres do not fit one device; each of the n
devices holds C / n of them (rows `axis_index * C/n ...`). Inside
`shard_map`:

  1. the embeddings and labels of the whole global batch are gathered;
  2. each device computes scale * cos for every row and its own classes
     (the target's with ArcFace's or CosFace's margin when the row's label
     is one of them);
  3. the softmax normaliser is combined across devices (max and sum of
     exponentials over the class axis: `pmax`, `psum`), and the target
     logit comes from the device that holds it;
  4. every device returns the same mean over the global batch.

With sample_rate = 1 the loss and all gradients equal the unsharded
`margin.arcface` / `margin.cosface` (tests). With sample_rate < 1 each
device keeps the centres of the batch's labels that it holds plus random
others, ceil(sample_rate * C / n) in all (at least the global batch size,
so that every positive fits), and the softmax runs over those only
(Partial FC's negative sampling: the other centres get no gradient this
step).
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import Aux, check_positive, l2_normalize

_MIN_SIN_SQ = 1e-12


def _target_fn(kind: str, margin: float):
  if kind == "cosface":
    return lambda c: c - margin
  if kind != "arcface":
    raise ValueError(f"kind must be 'arcface' or 'cosface', got {kind!r}")
  cos_m, sin_m = jnp.cos(margin), jnp.sin(margin)

  def arc(c):
    sin = jnp.sqrt(jnp.maximum(1.0 - c * c, _MIN_SIN_SQ))
    return c * cos_m - sin * sin_m

  return arc


def num_sampled(num_local: int, sample_rate: float, batch: int = 1) -> int:
  """Centres kept per device: ceil(sample_rate * C/n), but at least the
  global batch size (every positive must fit, as in insightface's
  Partial FC) and at most C/n."""
  if not 0 < sample_rate <= 1:
    raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
  want = max(batch, int(-(-sample_rate * num_local // 1)))
  return max(1, min(num_local, want))


def _sample(rng, local_labels, num_local, keep):
  """Indices [keep] of this device's centres: every positive, then random
  others. `local_labels` [N]: the batch's labels minus this device's first
  class (outside [0, num_local): not held here)."""
  held = (local_labels >= 0) & (local_labels < num_local)
  is_pos = (
    jnp.zeros(num_local, bool)
    .at[jnp.where(held, local_labels, num_local)]
    .set(True, mode="drop")
  )
  score = jax.random.uniform(rng, (num_local,)) + 2.0 * is_pos
  _, index = jax.lax.top_k(score, keep)
  return jnp.sort(index)


def partial_fc(
  emb: jax.Array,
  class_weights: jax.Array,
  ids: jax.Array,
  *,
  kind: str = "arcface",
  scale: float = 64.0,
  margin: float = 0.5,
  num_classes: int | None = None,
  sample_rate: float = 1.0,
  rng: jax.Array | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """ArcFace / CosFace with class centres split over devices.

  Args:
    emb: [b, d] this device's embeddings (normalised inside).
    class_weights: [C/n, d] this device's class centres (all C when
      axis_name is None), normalised inside.
    ids: [b] class labels in [0, C).
    kind: "arcface" (cos(theta_y + m)) or "cosface" (cos(theta_y) - m).
    scale: s > 0.
    margin: m.
    num_classes: the real C when the centres were padded to a multiple of
      the devices (padding rows never enter the softmax); default all rows.
    sample_rate: in (0, 1]: the share of each device's centres in the
      softmax (every positive kept; at least the global batch size of
      them). 1: exact.
    rng: PRNG key for the sampling (the same on every device; needed when
      sample_rate < 1).
    axis_name: the mapped data axis inside `shard_map`, or None.
  Returns:
    (loss, {"top1": accuracy over the softmax's classes, "target_cos"}),
    means over the global batch, equal on every device.
  """
  check_positive("scale", scale)
  target_fn = _target_fn(kind, margin)
  if axis_name is not None:
    emb = jax.lax.all_gather(emb, axis_name, tiled=True)  # [N, d]
    ids = jax.lax.all_gather(ids, axis_name, tiled=True)  # [N]
    first = jax.lax.axis_index(axis_name) * class_weights.shape[0]
  else:
    first = 0
  num_local = class_weights.shape[0]
  local = ids - first  # [N] the label among this device's classes
  real = jnp.ones(num_local, bool)  # [C/n] not padding
  if num_classes is not None:
    real = jnp.arange(num_local) + first < num_classes
  if sample_rate < 1:
    if rng is None:
      raise ValueError("sample_rate < 1 needs rng")
    keep = num_sampled(num_local, sample_rate, ids.shape[0])
    index = _sample(jax.random.fold_in(rng, first), local, num_local, keep)
    class_weights = jnp.take(class_weights, index, axis=0)
    real = jnp.take(real, index)
    # label -> its position among the kept centres (-1: not kept here)
    position = jnp.full(num_local + 1, -1).at[index].set(jnp.arange(keep))
    held = (local >= 0) & (local < num_local)
    local = jnp.where(held, position[jnp.clip(local, 0, num_local)], -1)
  cos = l2_normalize(emb) @ l2_normalize(class_weights).T  # [N, c_kept]
  is_y = jax.nn.one_hot(local, cos.shape[1], dtype=bool)  # [N, c_kept]
  cos_y = jnp.sum(jnp.where(is_y, cos, 0.0), axis=1)  # 0 off this device
  logits = jnp.where(is_y, scale * target_fn(cos_y)[:, None], scale * cos)
  logits = jnp.where(real[None, :], logits, -jnp.inf)
  # log-sum-exp over every device's classes: a shared maximum, then the
  # sums of exponentials; the target's logit from the device holding it.
  top = jax.lax.stop_gradient(jnp.max(logits, axis=1))  # [N]
  top = jnp.where(jnp.isfinite(top), top, 0.0)  # a shard of padding only
  target = jnp.sum(jnp.where(is_y, logits, 0.0), axis=1)  # [N]
  best = jax.lax.stop_gradient(jnp.max(jnp.where(real, cos, -2.0), axis=1))
  if axis_name is not None:
    shared = jax.lax.pmax(top, axis_name)
    sums = jax.lax.psum(
      jnp.sum(jnp.exp(logits - shared[:, None]), axis=1), axis_name
    )
    target = jax.lax.psum(target, axis_name)
    cos_y = jax.lax.psum(cos_y, axis_name)
    best = jax.lax.pmax(best, axis_name)
  else:
    shared = top
    sums = jnp.sum(jnp.exp(logits - shared[:, None]), axis=1)
  ce = shared + jnp.log(sums) - target  # [N]
  cos_y = jax.lax.stop_gradient(cos_y)
  aux = {
    # the target is the nearest centre (among the sampled ones)
    "top1": jnp.mean((cos_y >= best).astype(jnp.float32)),
    "target_cos": jnp.mean(cos_y),
  }
  return jnp.mean(ce), aux

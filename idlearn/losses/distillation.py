"""Self-distillation: DINO and CION's identity-guided self-distillation.

The student is trained on every crop; the teacher (an EMA of the student,
kept by the train loop) sees the global crops only. Its outputs are centred
(`center`, an EMA of the teacher's batch mean, updated with
`update_center`) and sharpened by a low temperature, then used as soft
targets for the student's cross-entropy. Teacher outputs never receive
gradients.
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import Aux, global_mean


def _check(student_logits, teacher_logits, center) -> None:
  if student_logits.ndim != 3:
    raise ValueError(
      f"student_logits must be [b, crops, k], got {student_logits.shape}"
    )
  b, v_s, k = student_logits.shape
  if teacher_logits.ndim != 3 or teacher_logits.shape[::2] != (b, k):
    raise ValueError(
      f"teacher_logits must be [{b}, crops, {k}], got {teacher_logits.shape}"
    )
  if teacher_logits.shape[1] > v_s:
    raise ValueError(
      f"teacher_logits has {teacher_logits.shape[1]} crops, more than the "
      f"student's {v_s}; the teacher's crops are the student's first ones"
    )
  if jnp.shape(center) not in ((k,), (1, k)):
    raise ValueError(f"center must have shape ({k},), got {jnp.shape(center)}")


def _teacher_probs(teacher_logits, center, teacher_temp):
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  center = jnp.reshape(jax.lax.stop_gradient(center), (-1,))
  return jax.nn.softmax((t - center) / teacher_temp, axis=-1)


def cion(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  center: jax.Array,
  num_instances: int,
  student_temp: float = 0.1,
  teacher_temp: float = 0.04,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """CION's identity-guided self-distillation loss.

  Zuo et al., "Cross-video Identity Correlating for Person
  Re-identification Pre-training", NeurIPS 2024, Sec. 3.3 (the authors'
  `GradualIdentityDINOLoss`). Rows come in consecutive groups of K =
  `num_instances` images of one identity (row p*K + i is instance i of
  identity p; a P x K sampler whose K is a multiple of `num_instances`
  gives this). For every teacher crop a and student crop c != a, with
  q = softmax((t - center) / teacher_temp) and
  log p = log_softmax(s / student_temp):

    l(a, c) = [ mean_rows H(q_a, p_c)                     (DINO term)
              + sum_{i != j} mean_p H(q_a[p, i], p_c[p, j]) ]
              / (K (K - 1) + 1)

  where H(q, p) = -sum_k q_k log p_k: besides its own crops, each image's
  student must predict the teacher's output for the *other* instances of
  its identity. The loss is the mean of l(a, c) over the crop pairs. With
  K = 1 this is DINO (Caron et al., 2021). CION grows K during training
  (2, 4, 6, 8 at epochs 40, 60, 80, 100): pass the current K.

  Args:
    student_logits: [b, v_s, k] student head outputs for all crops.
    teacher_logits: [b, v_t, k] teacher head outputs for the global crops,
      which are the student's first v_t crops.
    center: [k] current centre (replicated, not sharded).
    num_instances: K, images per identity group (static).
    student_temp, teacher_temp: temperatures (CION: 0.1 and 0.04).
    axis_name: mapped batch axis, or None. Each device must hold whole
      identity groups (local b divisible by K).
  Returns:
    (loss, aux) with aux["teacher_entropy"] (mean entropy of q) and
    aux["dino"] (the unnormalised own-instance term).
  """
  _check(student_logits, teacher_logits, center)
  b, v_s, k = student_logits.shape
  v_t = teacher_logits.shape[1]
  if num_instances < 1 or b % num_instances:
    raise ValueError(
      f"num_instances must divide the (local) batch {b}, got {num_instances}"
    )
  kk = num_instances
  q = _teacher_probs(teacher_logits, center, teacher_temp)  # [b, v_t, k]
  logp = jax.nn.log_softmax(
    student_logits.astype(jnp.float32) / student_temp, axis=-1
  )
  q = q.reshape(b // kk, kk, v_t, k)  # [P, K, v_t, k]
  logp = logp.reshape(b // kk, kk, v_s, k)
  # cross[a, c, i, j] = mean_p H(q[p, i, a], p[p, j, c]).
  cross = -jnp.einsum("piak,pjck->acij", q, logp) / (b // kk)
  own = jnp.trace(cross, axis1=2, axis2=3) / kk  # [v_t, v_s]: DINO term
  others = jnp.sum(cross, axis=(2, 3)) - own * kk
  per_pair = (own + others) / (kk * (kk - 1) + 1)
  # Crop pairs (a, c) with c != a; teacher crop a is student crop a.
  valid = ~jnp.eye(v_t, v_s, dtype=bool)
  loss = jnp.sum(jnp.where(valid, per_pair, 0.0)) / jnp.sum(valid)
  dino_term = jnp.sum(jnp.where(valid, own, 0.0)) / jnp.sum(valid)
  ent = -jnp.sum(q * jnp.log(jnp.maximum(q, 1e-30)), axis=-1).mean()
  loss, dino_term, ent = global_mean((loss, dino_term, ent), axis_name)
  return loss, {"dino": dino_term, "teacher_entropy": ent}


def dino(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  center: jax.Array,
  student_temp: float = 0.1,
  teacher_temp: float = 0.04,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """DINO self-distillation loss (Caron et al., ICCV 2021, Alg. 1).

  Mean over (teacher crop a, student crop c != a) of
  mean_rows -sum_k q_a log p_c, q = softmax((t - center) / teacher_temp),
  p = softmax(s / student_temp). Same arguments as `cion` with K = 1.
  """
  return cion(
    student_logits,
    teacher_logits,
    center=center,
    num_instances=1,
    student_temp=student_temp,
    teacher_temp=teacher_temp,
    axis_name=axis_name,
  )


def update_center(
  center: jax.Array,
  teacher_logits: jax.Array,
  *,
  momentum: float = 0.9,
  axis_name: str | None = None,
) -> jax.Array:
  """EMA of the teacher's mean output over the global batch and its crops.

  center <- momentum * center + (1 - momentum) * mean(teacher_logits)
  (DINO; CION uses momentum 0.9).

  Args:
    center: [k] current centre.
    teacher_logits: [b, v_t, k] teacher outputs of this step.
    momentum: EMA momentum.
    axis_name: mapped batch axis, or None.
  Returns:
    [k] the new centre (no gradient flows through it).
  """
  k = teacher_logits.shape[-1]
  if teacher_logits.ndim != 3 or jnp.shape(center) not in ((k,), (1, k)):
    raise ValueError(
      f"teacher_logits must be [b, crops, k] and center [k], got "
      f"{teacher_logits.shape} and {jnp.shape(center)}"
    )
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  batch_center = global_mean(t.mean(axis=(0, 1)), axis_name)
  center = jnp.reshape(center, (k,)).astype(jnp.float32)
  return momentum * center + (1.0 - momentum) * batch_center


def cion_num_instances(
  epoch: int,
  *,
  epochs: tuple[int, ...] = (40, 60, 80, 100),
  instances: tuple[int, ...] = (2, 4, 6, 8),
) -> int:
  """CION's growing K: instances[i] for the first epochs[i] epochs.

  Host-side schedule (K changes the loss' static shape). Past the last
  boundary the last K is kept.
  """
  if len(epochs) != len(instances):
    raise ValueError(
      f"epochs and instances must have the same length, got {epochs} and "
      f"{instances}"
    )
  for boundary, k in zip(epochs, instances, strict=True):
    if epoch < boundary:
      return k
  return instances[-1]

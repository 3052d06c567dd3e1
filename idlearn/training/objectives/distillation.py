"""Self-distillation objectives: DINO and CION's identity-guided variant.

The model needs a `head="dino"` (output "dino"), the config an EMA teacher
(`optim.ema_decay`, e.g. 0.996) and multi-crop views: the first
`global_views` views are the global crops the teacher sees, the rest local
crops only the student sees. The teacher's centre lives in the train
state's extras and is updated after every step.
"""

import functools

import jax
import jax.numpy as jnp

from idlearn import losses
from idlearn.training import sharding
from idlearn.training.objectives.base import Objective, need_views, pick

_DISTILL = {
  "on": "dino",
  "student_temp": 0.1,
  "teacher_temp": 0.04,
  "center_momentum": 0.9,
  "global_views": 2,
}
FIELDS = {
  "dino": dict(_DISTILL),
  "cion": {
    **_DISTILL,
    # K instances per identity group; instances[i] from step
    # instance_steps[i] on (CION grows K: 2, 4, 6, 8). The loader's P x K
    # sampler must use k = max(instances) (a multiple of every K).
    "instances": (2, 4),
    "instance_steps": (0, 0),
  },
}


def num_instances_at(
  step: jax.Array, instances: tuple[int, ...], starts: tuple[int, ...]
) -> jax.Array:
  """Index into `instances` of the stage `step` is in (traced)."""
  starts = jnp.asarray(starts[1:], jnp.int32)
  return jnp.sum(step >= starts).astype(jnp.int32)


def _check_schedule(cfg: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
  ks, starts = tuple(cfg["instances"]), tuple(cfg["instance_steps"])
  if len(ks) != len(starts) or not ks:
    raise ValueError(
      f"config.loss.instances {ks} and instance_steps {starts} must have "
      "the same (non-zero) length"
    )
  if list(starts) != sorted(starts) or starts[0] != 0:
    raise ValueError(
      f"config.loss.instance_steps {starts} must start at 0 and not decrease"
    )
  return ks, starts


def make_distillation(name: str, cfg: dict, mesh) -> Objective:
  """DINO (K = 1) or CION (K from the step's stage)."""
  ks, starts = (1,), (0,)
  if name == "cion":
    ks, starts = _check_schedule(cfg)
  on, n_global = cfg["on"], cfg["global_views"]

  def per_k(k):
    def fn(student, teacher, center, *, axis_name=None):
      return losses.cion(
        student,
        teacher,
        center=center,
        num_instances=k,
        student_temp=cfg["student_temp"],
        teacher_temp=cfg["teacher_temp"],
        axis_name=axis_name,
      )

    return sharding.shard_loss(fn, mesh, replicated_args=(2,))

  branches = [per_k(k) for k in ks]

  def stack(outs):
    return jnp.stack([pick(outs, v, on) for v in range(len(outs))], axis=1)

  def loss(outs, batch, ctx):
    need_views(name, outs, n_global)
    if ctx.teacher is None:
      raise ValueError(f"loss {name!r} needs the EMA teacher's outputs")
    student, teacher = stack(outs), stack(ctx.teacher)  # [b, v, k]
    center = ctx.extras["center"]
    if len(branches) == 1:
      value, aux = branches[0](student, teacher, center)
    else:
      stage = num_instances_at(ctx.step, ks, starts)
      value, aux = jax.lax.switch(stage, branches, student, teacher, center)
      aux["num_instances"] = jnp.asarray(ks, jnp.float32)[stage]
    return value, aux

  def init_extras(out_shapes):
    return {"center": jnp.zeros(out_shapes[on].shape[-1:], jnp.float32)}

  def update_extras(extras, outs, teacher, batch):
    center = losses.update_center(
      extras["center"], stack(teacher), momentum=cfg["center_momentum"]
    )
    return {**extras, "center": center}

  return Objective(
    loss,
    teacher_views=n_global,
    init_extras=init_extras,
    update_extras=update_extras,
  )


BUILDERS = {
  "dino": functools.partial(make_distillation, "dino"),
  "cion": functools.partial(make_distillation, "cion"),
}

"""Self-distillation: DINO and CION's identity-guided variant.

DINO (Caron et al., ICCV 2021): a student and an EMA teacher (momentum
`ema_decay`, cosine ramp to `ema_end_decay`) of one network with a DINO
head; the student's softmax over K prototypes on every crop is trained to
match the teacher's sharpened, centred softmax on the other global crops.
CION (Zuo et al., NeurIPS 2024, "Cross-video Identity Correlating
pre-training"): the student of each image also predicts the teacher's
outputs for the other instances of its identity group (K instances per
group, K growing during training; `losses.cion`). The teacher's centre is
this method's state, updated after every step.

Views by role: "global" (2: the crops the teacher sees) and "local" (any
number, student only). Batches: P x K with rows of one identity (or
tracklet) consecutive; K = max(instances) must divide every device's rows.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.encoders import backbone
from idlearn.encoders.heads import DINOHead
from idlearn.methods import base


class DinoNet(nn.Module):
  """Encoder + DINO head ("dino" [n, K] prototype logits)."""

  encoder: nn.Module
  hidden: int = 2048
  bottleneck: int = 256
  layers: int = 3
  prototypes: int = 65536
  head_bn: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    out = backbone(self.encoder, "none", images, train=train, dtype=self.dtype)
    out["dino"] = DINOHead(
      out_dim=self.prototypes,
      hidden_dim=self.hidden,
      bottleneck_dim=self.bottleneck,
      num_layers=self.layers,
      use_bn=self.head_bn,
      dtype=self.dtype,
      name="dino_head",
    )(out["emb"], train=train)
    return out


def num_instances_at(
  step: jax.Array, instances: tuple[int, ...], starts: tuple[int, ...]
) -> jax.Array:
  """Index into `instances` of the stage `step` is in (traced)."""
  starts = jnp.asarray(starts[1:], jnp.int32)
  return jnp.sum(step >= starts).astype(jnp.int32)


class Dino(base.Method):
  NAMES = ("dino",)
  VIEWS = {"global": 2}
  FIELDS = {
    "student_temp": 0.1,
    "teacher_temp": 0.04,
    "center_momentum": 0.9,
    "ema_decay": 0.996,  # teacher momentum at step 0
    "ema_end_decay": 1.0,  # cosine ramp to it (0: constant)
    "head_hidden": 2048,
    "head_bottleneck": 256,
    "head_layers": 3,
    "prototypes": 65536,
    # BatchNorm in the head's MLP. A small encoder from scratch maps all
    # images to nearly one direction (mean pairwise cosine 0.95 on MARS
    # crops), so without it the teacher's logits vary across the batch by
    # less than its temperature and, once centred, its targets are uniform.
    "head_bn": False,
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    if not cfg["ema_decay"] > 0:
      raise base.field_error(
        name, f"ema_decay={cfg['ema_decay']}: the teacher needs one in (0, 1)"
      )
    self.schedule = self._schedule()
    self._branches = [self._per_k(k) for k in self.schedule[0]]

  def _schedule(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (1,), (0,)

  def _per_k(self, k):
    cfg = self.cfg

    def fn(student, teacher, center, *, axis_name=None):
      return losses.cion(
        student, teacher, center=center, num_instances=k,
        student_temp=cfg["student_temp"], teacher_temp=cfg["teacher_temp"],
        axis_name=axis_name,
      )  # fmt: skip

    return sharding.shard_loss(fn, self.setup.mesh, replicated_args=(2,))

  def network(self) -> nn.Module:
    cfg = self.cfg
    return DinoNet(
      encoder=self.setup.make_encoder(),
      hidden=cfg["head_hidden"],
      bottleneck=cfg["head_bottleneck"],
      layers=cfg["head_layers"],
      prototypes=cfg["prototypes"],
      head_bn=cfg["head_bn"],
      dtype=self.setup.dtype,
    )

  def ema_decay(self):
    cfg = self.cfg
    return base.ema_schedule(
      cfg["ema_decay"], cfg["ema_end_decay"], self.setup.total_steps
    )

  def init_extras(self, out_shapes):
    return {"center": jnp.zeros(out_shapes["dino"].shape[-1:], jnp.float32)}

  def loss(self, net, views, batch, ctx):
    crops = [*views["global"], *views.get("local", ())]
    student = jnp.stack([o["dino"] for o in net.views(crops)], axis=1)
    teacher = jnp.stack(
      [net.teacher(x)["dino"] for x in views["global"]], axis=1
    )  # [b, v, K]
    center = ctx.extras["center"]
    ks, starts = self.schedule
    if len(ks) == 1:
      value, aux = self._branches[0](student, teacher, center)
    else:
      stage = num_instances_at(ctx.step, ks, starts)
      value, aux = jax.lax.switch(
        stage, self._branches, student, teacher, center
      )
      aux["num_instances"] = jnp.asarray(ks, jnp.float32)[stage]
    new_center = losses.update_center(
      center, teacher, momentum=self.cfg["center_momentum"]
    )
    return value, aux, {**ctx.extras, "center": new_center}


class Cion(Dino):
  NAMES = ("cion",)
  FIELDS = {
    **Dino.FIELDS,
    # K instances per identity group; instances[i] from step
    # instance_steps[i] on (CION grows K: 2, 4, 6, 8). The loader's P x K
    # sampler must use k = max(instances) (a multiple of every K).
    "instances": (2, 4),
    "instance_steps": (0, 0),
  }

  def _schedule(self):
    ks, starts = tuple(self.cfg["instances"]), tuple(self.cfg["instance_steps"])
    if len(ks) != len(starts) or not ks:
      raise base.field_error(
        self.name,
        f"instances {ks} and instance_steps {starts} must have the same "
        "(non-zero) length",
      )
    if list(starts) != sorted(starts) or starts[0] != 0:
      raise base.field_error(
        self.name, f"instance_steps {starts} must start at 0 and not decrease"
      )
    inp = self.setup.input
    if inp["sampler"] != "pk" or any(inp["k"] % k for k in ks):
      raise base.field_error(
        self.name,
        f"instances {ks} are read from P x K groups: config.input.sampler "
        f"must be 'pk' with k a multiple of each (got {inp['sampler']!r}, "
        f"k={inp['k']})",
      )
    return ks, starts


METHODS = (Dino, Cion)

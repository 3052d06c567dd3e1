"""Two-view contrastive self-supervision: SimCLR, DCL and DCLW.

SimCLR (Chen et al., ICML 2020): two augmented views of each image
(role "global", 2 views), a projection MLP, NT-Xent over the global batch
(`losses.info_nce`). DCL / DCLW (Yeh et al., ECCV 2022): the positive pair
removed from the denominator, and its von Mises-Fisher weighted variant
(`losses.dcl`, `losses.dclw`). Labels are not used.

Optional camera adversary (`camera_adversary` > 0, `num_cameras` cameras):
a discriminator predicts each view's camera from the encoder's embedding
(`losses.domain_classification` trains only the discriminator) and
`losses.domain_balance` (which trains only the encoder) pushes the camera
out of it, as DomainMix does for domains.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.encoders import backbone
from idlearn.encoders.heads import DomainDiscriminator, ProjectionMLP
from idlearn.methods import base

PROJECTOR_FIELDS = {
  "proj_hidden": 2048,
  "proj_out": 128,
  "proj_layers": 2,  # Dense layers of the projector; 0: none (use "emb")
}
ADVERSARY_FIELDS = {
  "camera_adversary": 0.0,  # weight of the camera balance term; 0: off
  "num_cameras": 0,  # cameras the adversary tells apart
}
PROJECTION_FIELDS = {**PROJECTOR_FIELDS, **ADVERSARY_FIELDS}


class ProjectionNet(nn.Module):
  """Encoder (+ projection MLP "proj", + camera discriminator)."""

  encoder: nn.Module
  proj_hidden: int = 2048
  proj_out: int = 128
  proj_layers: int = 2
  num_cameras: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    out = backbone(self.encoder, "none", images, train=train, dtype=self.dtype)
    if self.proj_layers:
      out["proj"] = ProjectionMLP(
        hidden_dim=self.proj_hidden,
        out_dim=self.proj_out,
        num_layers=self.proj_layers,
        dtype=self.dtype,
        name="projector",
      )(out["emb"], train=train)
    if self.num_cameras:
      out["domain_logits"], out["domain_logits_adv"] = DomainDiscriminator(
        num_domains=self.num_cameras, dtype=self.dtype,
        name="domain_discriminator",
      )(out["emb"], train=train)  # fmt: skip
    return out


class ProjectionMethod(base.Method):
  """A method on the projection network; checks the adversary fields."""

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    weight = cfg.get("camera_adversary", 0.0)
    if weight > 0 and cfg["num_cameras"] < 2:
      raise base.field_error(
        name,
        f"camera_adversary={weight} needs num_cameras >= 2 (the cameras of "
        f"{setup.input['name']}), got {cfg['num_cameras']}",
      )
    self.num_cameras = cfg["num_cameras"] if weight > 0 else 0

  def network(self) -> nn.Module:
    cfg = self.cfg
    return ProjectionNet(
      encoder=self.setup.make_encoder(),
      proj_hidden=cfg["proj_hidden"],
      proj_out=cfg["proj_out"],
      proj_layers=cfg["proj_layers"],
      num_cameras=self.num_cameras,
      dtype=self.setup.dtype,
    )

  def adversary(self, outs, cams):
    """(weighted discriminator CE + balance, aux) averaged over `outs`."""
    weight = self.cfg["camera_adversary"]
    disc, bal, acc = 0.0, 0.0, 0.0
    for out in outs:
      d, d_aux = losses.domain_classification(out["domain_logits"], cams)
      b, _ = losses.domain_balance(out["domain_logits_adv"])
      disc, bal, acc = disc + d, bal + b, acc + d_aux["accuracy"]
    n = len(outs)
    aux = {"cam_disc": disc / n, "cam_balance": bal / n, "cam_acc": acc / n}
    return (disc + weight * bal) / n, aux


def projected(out) -> jax.Array:
  """The projector's output, or the encoder's embedding without one."""
  return out["proj"] if "proj" in out else out["emb"]


class _PairContrastive(ProjectionMethod):
  LOSS = "info_nce"
  VIEWS = {"global": 2}
  FIELDS = {"temperature": 0.1, **PROJECTION_FIELDS}

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    kw = {k: cfg[k] for k in ("temperature", "sigma") if k in cfg}
    self._pair = sharding.shard_loss(
      getattr(losses, self.LOSS), setup.mesh, **kw
    )

  def loss(self, net, views, batch, ctx):
    outs = net.views(views["global"][:2])
    value, aux = self._pair(projected(outs[0]), projected(outs[1]))
    if self.num_cameras:
      adv, adv_aux = self.adversary(outs, batch["cam"])
      value, aux = value + adv, {**aux, **adv_aux}
    return value, aux, ctx.extras


class SimCLR(_PairContrastive):
  NAMES = ("simclr",)


class DCL(_PairContrastive):
  NAMES = ("dcl",)
  LOSS = "dcl"


class DCLW(_PairContrastive):
  NAMES = ("dclw",)
  LOSS = "dclw"
  FIELDS = {"temperature": 0.1, "sigma": 0.5, **PROJECTION_FIELDS}


METHODS = (SimCLR, DCL, DCLW)

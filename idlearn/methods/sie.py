"""SIE: Split Invariant-Equivariant representations.

Garrido, Najman, LeCun, "Self-supervised learning of Split Invariant
Equivariant representations", ICML 2023 (arXiv 2302.10283). Followed: the
official code facebookresearch/SIE at 54541cf (`src/models.py` class `SIE`
and `Projector`, `src/hypernetwork.py` `ParametrizedNet` with `--hypernetwork
linear`, the README's training command).

One step, on two augmented views of each image (role "global", 2 views,
with their augmentation parameters: `config.views.global.params = True`):
- the encoder's pooled representation r [n, D] ("emb") is split: the first
  D - equi dimensions are the invariant part, the last `equi` the
  equivariant part;
- each part has its own projector ([Dense -> BN -> ReLU] x (L - 1) ->
  Dense without bias, VICReg's), of widths `mlp` scaled by the part's
  share of D (official: `--mlp 2048-2048-2048` with `--equi 256` of 512
  gives 1024-1024-1024 each);
- a linear hypernetwork predictor maps view 1's equivariant embedding to a
  guess of view 2's: pred = W(z) x_eq with W(z) = sum_k z_k A_k, the A_k
  learned [d_eq, d_eq] matrices and z the transformation from view 1 to
  view 2 (no bias, no activation: `--predictor ""`). W depends on z only,
  not on the image, so it cannot make the equivariant part invariant;
- the loss: `losses.sie` (invariance MSE, equivariance MSE, variance and
  covariance on the concatenated [inv, equi] embeddings, variance of the
  prediction; weights 10 / 10 / 1, beta 0.45).
`equi = 0` is the invariant-only baseline arm: VICReg (`losses.vicreg`,
same weights) with one projector of widths `mlp` on the whole
representation, at the same budget (the paper's VICReg baseline).

Retrieval ("eval", the encoder that leaves the run, `idlearn.load`): the
invariant part of the representation, r[:, :D - equi] (the `encoders`
neck "slice"); the projectors and the predictor are discarded, as the
paper evaluates on representations. With `equi = 0`, r itself.

Assumptions (differences from the official code):
- z: the paper's transformations are known 3D rotations of rendered
  objects (z = the relative rotation's quaternion, plus hue deltas for
  SIERotColor). Here they are our augmentations: z = [1, relative
  parameters of `transforms`] (`augment.relative_params`: view 2's
  parameters minus view 1's, e.g. log relative zoom and stretch, relative
  crop position; |difference| for flip). The leading 1 gives W an
  image-independent A_0, the map for "no transformation" (a quaternion's
  real part plays that role in the official code; our differences are 0
  there, which would force W = 0);
- the hypernetwork's A starts at unit gain (LeCun normal over its
  k * d_eq inputs); the official torch Linear starts uniform in
  +-1/sqrt(k), a predictor whose outputs are sqrt(d_eq) larger;
- the projectors' hidden Dense layers have no bias (BN follows: same
  function); the optimizer is the config's (official: Adam, lr 1e-3,
  wd 1e-6, constant; no schedule);
- the paper's online evaluators (classifier, rotation predictor on
  detached features) are not trained: the R^2 of the relative
  parameters is measured by the "equivariance" evaluator instead
  (`evaluators.equivariance`).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn import augment, losses, sharding
from idlearn.encoders import backbone
from idlearn.encoders.conv import batch_norm
from idlearn.methods import base

WEIGHT_FIELDS = ("sim_weight", "std_weight", "cov_weight", "equi_weight")
ROLE = "global"


class Projector(nn.Module):
  """VICReg's projector: [Dense -> BN -> ReLU] x (L - 1) -> Dense (no bias).

  Attributes:
    dims: the L layers' widths (the last is the embedding's).
  """

  dims: Sequence[int]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[n, d] -> float32 [n, dims[-1]]."""
    x = x.astype(self.dtype)
    for i, width in enumerate(self.dims[:-1]):
      x = nn.Dense(width, use_bias=False, dtype=self.dtype, name=f"dense{i}")(x)
      x = nn.relu(batch_norm(train, self.dtype, name=f"bn{i}")(x))
    last = len(self.dims) - 1
    x = nn.Dense(
      self.dims[-1], use_bias=False, dtype=self.dtype, name=f"dense{last}"
    )(x)
    return x.astype(jnp.float32)


def predict(a: jax.Array, x: jax.Array, z: jax.Array) -> jax.Array:
  """The linear hypernetwork predictor W(z) x, W(z) = sum_k z_k A_k.

  Args:
    a: [k, d, d] the learned matrices A_k (row = output dimension).
    x: [n, d] equivariant embeddings of view 1.
    z: [n, k] the transformation codes.
  Returns:
    float32 [n, d].
  """
  # sum_k z_k (A_k x): k matrix products, no per-sample [n, d, d] W(z_n).
  ax = jnp.einsum("kij,nj->nki", a, x)  # [n, k, d]
  return jnp.einsum("nk,nki->ni", z, ax).astype(jnp.float32)


class SIENet(nn.Module):
  """Encoder -> r ("emb"); r's invariant part ("eval"); the projected parts
  ("inv", "equi") and, given z, the prediction ("pred"). With equi = 0 (the
  baseline): one projector on r ("proj").

  Attributes:
    encoder: the encoder module.
    inv_dim: D - equi, the width of r's invariant part.
    equi: the width of r's equivariant part (0: baseline).
    mlp_inv, mlp_equi: the projectors' widths (mlp_inv: the baseline's).
    num_z: k, the length of z (the hypernetwork's A_k).
  """

  encoder: nn.Module
  inv_dim: int
  equi: int
  mlp_inv: Sequence[int]
  mlp_equi: Sequence[int] = ()
  num_z: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
    self, images: jax.Array, train: bool = False, z: jax.Array | None = None
  ) -> dict[str, jax.Array]:
    """images float32 [n, h, w, 3] (z float32 [n, num_z]) -> outputs."""
    kw = dict(train=train, dtype=self.dtype)
    if not self.equi:
      out = backbone(self.encoder, "none", images, **kw)
      proj = Projector(self.mlp_inv, self.dtype, name="projector")
      out["proj"] = proj(out["emb"], train=train)
      return out
    out = backbone(self.encoder, "slice", images, neck_dim=self.inv_dim, **kw)
    r, d = out["emb"], self.inv_dim
    out["inv"] = Projector(self.mlp_inv, self.dtype, name="projector_inv")(
      r[:, :d], train=train
    )
    out["equi"] = Projector(self.mlp_equi, self.dtype, name="projector_equi")(
      r[:, d:], train=train
    )
    # Created at init (no z there) so that the step finds it.
    d_eq = self.mlp_equi[-1]
    init = nn.initializers.lecun_normal(in_axis=(0, 2), out_axis=1)
    a = self.param("hypernet", init, (self.num_z, d_eq, d_eq))
    if z is not None:
      out["pred"] = predict(a, out["equi"], z)
    return out


def transformation(
  p1: jax.Array, p2: jax.Array, transforms: Sequence[str]
) -> jax.Array:
  """z = [1, relative parameters] float32 [n, 1 + len(transforms)] of the
  two views' augmentation parameters p1, p2 [n, len(augment.PARAM_NAMES)]
  (see the module docstring)."""
  rel = augment.relative_params(p1, p2, transforms)
  return jnp.concatenate([jnp.ones_like(rel[:, :1]), rel], axis=1)


def _feature_dim(setup: base.Setup) -> int:
  """D, the width of the encoder's pooled representation."""
  enc = setup.make_encoder()
  if hasattr(enc, "feature_dim"):
    return int(enc.feature_dim)
  x = jax.ShapeDtypeStruct((1, *setup.input["image_size"], 3), jnp.float32)
  out = jax.eval_shape(
    lambda x: enc.init_with_output(jax.random.key(0), x)[0][0], x
  )
  return int(out.shape[-1])


class SIE(base.Method):
  NAMES = ("sie",)
  VIEWS = {ROLE: 2}
  FIELDS = {
    # the last `equi` dims of the representation are equivariant;
    # 0: the invariant-only baseline (VICReg on the whole representation)
    "equi": 64,
    # projector widths for the whole representation; each part gets its
    # share (rounded), as the official --mlp
    "mlp": (1024, 1024, 1024),
    "sim_weight": 10.0,
    "std_weight": 10.0,
    "cov_weight": 1.0,
    "equi_weight": 0.45,  # beta (official --equi-factor 0.45)
    # augment.PARAM_NAMES whose relative values form z
    "transforms": ("crop_y", "crop_x", "crop_scale", "crop_aspect", "flip"),
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    equi, mlp = cfg["equi"], tuple(cfg["mlp"])
    if not mlp or not all(isinstance(m, int) and m > 0 for m in mlp):
      raise base.field_error(
        name, f"mlp={cfg['mlp']!r}: expected widths, positive integers"
      )
    for key in WEIGHT_FIELDS:
      if cfg[key] < 0:
        raise base.field_error(name, f"{key}={cfg[key]}: expected >= 0")
    self.dim = _feature_dim(setup)
    if not 0 <= equi < self.dim:
      raise base.field_error(
        name,
        f"equi={equi}: expected 0 (the VICReg baseline) or a width below "
        f"the representation's, {self.dim} (config.model)",
      )
    weights = {k: cfg[k] for k in WEIGHT_FIELDS}
    if not equi:
      del weights["equi_weight"]
      self.mlp_inv, self.mlp_equi = mlp, ()
      self._vicreg = sharding.shard_loss(losses.vicreg, setup.mesh, **weights)
      return
    share = lambda frac: tuple(max(1, round(m * frac)) for m in mlp)
    self.mlp_inv = share((self.dim - equi) / self.dim)
    self.mlp_equi = share(equi / self.dim)
    self.transforms = tuple(cfg["transforms"])
    bad = [t for t in self.transforms if t not in augment.PARAM_NAMES]
    if bad or not self.transforms:
      raise base.field_error(
        name,
        f"transforms={cfg['transforms']!r}: expected some of "
        f"{list(augment.PARAM_NAMES)} (the augmentation parameters whose "
        f"relative values condition the predictor)",
      )
    if setup.views.get(augment.params_role(ROLE), 0) < 2:
      raise base.field_error(
        name,
        f"equi={equi} conditions the predictor on the views' augmentation "
        f"parameters: set config.views.{ROLE}.params = True",
      )
    self._sie = sharding.shard_loss(losses.sie, setup.mesh, **weights)

  @property
  def neck(self) -> str:
    return "slice" if self.cfg["equi"] else "none"

  @property
  def neck_dim(self) -> int:
    return self.dim - self.cfg["equi"] if self.cfg["equi"] else 0

  def network(self) -> nn.Module:
    equi = self.cfg["equi"]
    return SIENet(
      encoder=self.setup.make_encoder(),
      inv_dim=self.dim - equi,
      equi=equi,
      mlp_inv=self.mlp_inv,
      mlp_equi=self.mlp_equi,
      num_z=1 + len(self.transforms) if equi else 1,
      dtype=self.setup.dtype,
    )

  def loss(self, net, views, batch, ctx):
    v1, v2 = views[ROLE][:2]
    if not self.cfg["equi"]:
      o1, o2 = net.views([v1, v2])
      value, aux = self._vicreg(o1["proj"], o2["proj"])
      return value, aux, ctx.extras
    p1, p2 = views[augment.params_role(ROLE)][:2]
    o1 = net(v1, z=transformation(p1, p2, self.transforms))
    o2 = net(v2)
    value, aux = self._sie(
      o1["inv"], o2["inv"], o1["equi"], o2["equi"], o1["pred"]
    )
    return value, aux, ctx.extras


METHODS = (SIE,)

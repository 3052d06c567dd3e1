"""AniTalker's identity / motion decoupling, on frame pairs of a tracklet.

Liu et al., "AniTalker: Animate Vivid and Diverse Talking Faces through
Identity-Decoupled Facial Motion Encoding", ACM MM 2024 (official code
X-LANCE/AniTalker@738c562, inference only), with the mutual-information
bound of Cheng et al., "CLUB: A Contrastive Log-ratio Upper Bound of Mutual
Information", ICML 2020 (Linear95/CLUB@57b4ad7). One shared encoder feeds
two heads, as the official `DecouplingModel` does: an identity code (the
retrieval feature) and a motion code. For a source frame s and a target
frame t of one tracklet (sampler "frame_pairs"; view roles "source" and
"target"):

  recon  L1 between the target frame (average-pooled by `recon_stride`)
         and a small conv decoder's output from [identity code of s,
         motion code of t] (AniTalker stage 1: the motion of t rendered
         with the identity of s);
  aam    AAM-softmax (ArcFace, margin 0.2, scale 30: the ECAPA-TDNN
         defaults AniTalker credits) of both frames' identity codes over
         the training tracklets (one tracklet = one identity: no identity
         labels are read);
  mi     the CLUB bound I(motion; identity) over both frames' codes
         (`losses.club_upper_bound`; q(identity | motion), the order of
         the maintainers' `TCLineEstimator([motion, identity])`), its
         estimator's parameters stop-gradient'ed: trains the encoder;
  nll    q's negative log-likelihood on stop-gradient codes
         (`losses.club_log_likelihood`): trains the estimator only.

  loss = recon_weight * recon + id_weight * aam
         + mi_weight * max(mi, 0) + nll        (the max: `mi_hinge`)

The estimator and the encoder are updated from this one backward pass
(the CLUB authors alternate two optimizers; the stop-gradients give each
side only its own term, as DomainMix's discriminator), so the loop needs
no second optimizer; with `mi_weight` 0 the estimator still learns and
the bound is still logged (the baseline's measured MI). CLUB bounds the
MI only while q fits p(identity | motion); q here lags the encoder by one
step (CLUB updates q first), and a negative estimate means a stale q
that the encoder is exploiting, not less information (measured: without
the hinge, the bound fell to -11 within 80 steps while q's error stayed
at the codes' variance). With `mi_hinge` the encoder minimises only a
positive estimate.

Retrieval feature ("eval"): the identity code, the `embedding` neck of
`encoders.Backbone` (one Dense on the pooled feature). The `code_probe`
evaluator reads the motion code through `probe_codes`.

Assumptions (AniTalker's training code is not released; notes in the
config): the loss weights, the margin-softmax classes (tracklets here;
the paper's are speaker identities), the decoder (LIA's warping renderer
in the paper, a plain upsampling conv net here), a linear identity head
(the official one is Linear-ReLU-Linear; the retrieval neck holds one
Dense), the motion head's sizes, CLUBMean (sigma = 1; the maintainers'
hint) by default, the identity code entering CLUB and the decoder as its
unit vector times sqrt(id_dim) (its norm carries no identity for the
metric loss, and a free norm would let the encoder shrink the bound by
shrinking the code), no "easy margin" fallback in the AAM-softmax.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from idlearn import losses, sharding
from idlearn.encoders import backbone
from idlearn.methods import base

CLUB_KINDS = ("mean", "gaussian")  # CLUBMean (sigma 1) | CLUB (learned)


def identity_code(proj: jax.Array) -> jax.Array:
  """[b, d] identity head output -> its unit vector times sqrt(d) [b, d]
  (per-dimension scale near 1, where q's variance is meaningful)."""
  return losses.l2_normalize(proj) * math.sqrt(proj.shape[-1])


class MotionHead(nn.Module):
  """Dense(hidden) - ReLU - Dense(dim) on the pooled feature [b, e]
  (the official `identity_excluded_net` is Linear-ReLU-Linear)."""

  hidden: int = 128
  dim: int = 32
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, emb: jax.Array) -> jax.Array:
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(emb))
    return nn.Dense(self.dim, dtype=self.dtype)(x).astype(jnp.float32)


class Decoder(nn.Module):
  """[b, z] code -> float32 [b, h, w, 3] image.

  Dense to a map of (h, w) / 2^len(widths), then per width a 2x nearest
  upsampling, a 3x3 conv and a ReLU, then a 3x3 conv to 3 channels.
  """

  size: tuple[int, int] = (64, 32)
  widths: tuple[int, ...] = (64, 32, 16)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    f = 2 ** len(self.widths)
    h, w = self.size[0] // f, self.size[1] // f
    x = nn.Dense(h * w * self.widths[0], dtype=self.dtype)(z)
    x = nn.relu(x).reshape(z.shape[0], h, w, self.widths[0])
    for width in self.widths:
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype)(x))
    return nn.Conv(3, (3, 3), dtype=self.dtype)(x).astype(jnp.float32)


class DecouplingNet(nn.Module):
  """Encoder -> "emb" (pooled) -> identity head ("proj" = "eval") and
  motion head ("motion"); the margin-softmax centres ("class_weights"
  [C, id_dim]) and CLUB's q parameters ("club") as outputs; with
  `identity` [b, id_dim] given (and at init), "recon" [b, h/s, w/s, 3]
  decoded from [identity, this image's motion code].
  """

  encoder: nn.Module
  id_dim: int = 128
  motion_dim: int = 32
  motion_hidden: int = 128
  decoder_widths: tuple[int, ...] = (64, 32, 16)
  recon_stride: int = 2
  num_classes: int = 1
  club_hidden: int = 128
  club_variance: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    images: jax.Array,
    train: bool = False,
    identity: jax.Array | None = None,
  ) -> dict[str, jax.Array]:
    out = backbone(
      self.encoder, "embedding", images, train=train, dtype=self.dtype,
      neck_dim=self.id_dim,
    )  # fmt: skip
    out["identity"] = identity_code(out["proj"])
    head = MotionHead(
      self.motion_hidden, self.motion_dim, self.dtype, name="motion"
    )
    out["motion"] = head(out["emb"])
    out["class_weights"] = self.param(
      "class_weights",
      nn.initializers.normal(0.01),
      (self.num_classes, self.id_dim),
    )
    out["club"] = self.param(
      "club",
      lambda rng: losses.club_init(
        rng, self.motion_dim, self.id_dim, hidden=self.club_hidden,
        variance=self.club_variance,
      ),
    )  # fmt: skip
    if identity is None and self.is_initializing():
      identity = out["identity"]  # creates the decoder
    if identity is not None:
      s = self.recon_stride
      size = (images.shape[1] // s, images.shape[2] // s)
      z = jnp.concatenate([identity, out["motion"]], axis=-1)
      decoder = Decoder(
        size, tuple(self.decoder_widths), self.dtype, name="decoder"
      )
      out["recon"] = decoder(z)
    return out


def pool(images: jax.Array, stride: int) -> jax.Array:
  """[b, h, w, c] -> [b, h / stride, w / stride, c] average pooling."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // stride, stride, w // stride, stride, c)
  return x.mean(axis=(2, 4))


class AniTalker(base.Method):
  NAMES = ("anitalker",)
  VIEWS = {"source": 1, "target": 1}
  FIELDS = {
    "id_dim": 128,  # identity code (the retrieval feature)
    "motion_dim": 32,
    "motion_hidden": 128,
    "decoder_widths": (64, 32, 16),
    "recon_stride": 2,  # the target is reconstructed at 1 / stride
    "recon_weight": 1.0,
    "id_weight": 1.0,
    "scale": 30.0,  # AAM-softmax (ECAPA-TDNN defaults)
    "margin": 0.2,
    "mi_weight": 0.1,  # 0: the baseline without the CLUB term
    "club": "mean",  # mean (CLUBMean, sigma 1) | gaussian (learned sigma)
    "club_hidden": 128,
    "mi_hinge": True,  # minimise max(bound, 0): no gain from a stale q
    "num_classes": 0,  # 0: the training split's tracklets
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    self._check(name, cfg, setup.input)
    self.num_classes = cfg["num_classes"] or _num_tracklets(setup.input)
    mesh = setup.mesh
    self._aam = sharding.shard_loss(
      losses.arcface, mesh, replicated_args=(1,), scale=cfg["scale"],
      margin=cfg["margin"],
    )  # fmt: skip
    self._bound = sharding.shard_loss(
      losses.club_upper_bound, mesh, replicated_args=(0,)
    )
    self._nll = sharding.shard_loss(
      losses.club_log_likelihood, mesh, replicated_args=(0,)
    )
    self._motion_fn = None

  @staticmethod
  def _check(name, cfg, inp):
    for key in ("id_dim", "motion_dim", "motion_hidden", "club_hidden"):
      if cfg[key] < 1:
        raise base.field_error(name, f"{key}={cfg[key]}: expected >= 1")
    for key in ("recon_weight", "id_weight", "mi_weight"):
      if cfg[key] < 0:
        raise base.field_error(name, f"{key}={cfg[key]}: expected >= 0")
    if cfg["club"] not in CLUB_KINDS:
      raise base.field_error(
        name, f"club={cfg['club']!r}: expected one of {CLUB_KINDS}"
      )
    widths, s = tuple(cfg["decoder_widths"]), cfg["recon_stride"]
    f = s * 2 ** len(widths)
    size = tuple(inp["image_size"])
    if not widths or min(widths) < 1 or s < 1 or size[0] % f or size[1] % f:
      raise base.field_error(
        name,
        f"decoder_widths={widths}, recon_stride={s}: the input size {size} "
        f"must be a multiple of recon_stride * 2^len(decoder_widths) = {f}",
      )
    if inp["sampler"] != "frame_pairs":
      raise base.field_error(
        name,
        "needs source / target frames of one tracklet: config.input."
        f"sampler='frame_pairs' (a video set), got {inp['sampler']!r}",
      )

  @property
  def neck(self) -> str:
    return "embedding"

  @property
  def neck_dim(self) -> int:
    return self.cfg["id_dim"]

  def network(self) -> nn.Module:
    cfg = self.cfg
    return DecouplingNet(
      encoder=self.setup.make_encoder(),
      id_dim=cfg["id_dim"],
      motion_dim=cfg["motion_dim"],
      motion_hidden=cfg["motion_hidden"],
      decoder_widths=tuple(cfg["decoder_widths"]),
      recon_stride=cfg["recon_stride"],
      num_classes=self.num_classes,
      club_hidden=cfg["club_hidden"],
      club_variance=cfg["club"] == "gaussian",
      dtype=self.setup.dtype,
    )

  def loss(self, net, views, batch, ctx):
    cfg = self.cfg
    src, tgt = base.first(views, "source"), base.first(views, "target")
    s = net(src)
    t = net(tgt, identity=s["identity"])  # t's motion, s's identity
    recon = jnp.mean(jnp.abs(t["recon"] - pool(tgt, cfg["recon_stride"])))
    both = lambda k: jnp.concatenate([s[k], t[k]])  # [2b, ...]
    labels = batch["tracklet"]
    aam, aam_aux = self._aam(
      both("proj"), s["class_weights"], jnp.concatenate([labels, labels])
    )
    motion, ident = both("motion"), both("identity")
    mi, mi_aux = self._bound(s["club"], motion, ident)
    nll, nll_aux = self._nll(s["club"], motion, ident)
    mi_term = jnp.maximum(mi, 0.0) if cfg["mi_hinge"] else mi
    total = (
      cfg["recon_weight"] * recon
      + cfg["id_weight"] * aam
      + cfg["mi_weight"] * mi_term
      + nll
    )
    aux = {
      "recon": recon,
      "aam": aam,
      "aam_top1": aam_aux["top1"],
      "mi": mi,
      "club_nll": nll,
      "club_mse": nll_aux["mse"],
      "mi_positive": mi_aux["positive"],
      # collapse watch: the motion code's mean per-dimension spread
      "motion_std": jnp.mean(jnp.std(jax.lax.stop_gradient(motion), 0)),
    }
    return total, aux, ctx.extras

  def probe_codes(self, params, feats) -> dict[str, np.ndarray]:
    """The codes the `code_probe` evaluator reads (its hook).

    Args:
      params: the network's parameters (a train state's).
      feats: the retrieval encoder's {"emb" [n, e] pooled feature, "eval"
        [n, id_dim] identity head output} of the same images.
    Returns:
      {"identity": unit identity code, "motion": motion code [n,
      motion_dim], "trunk": the shared pooled feature}, float32.
    """
    if self._motion_fn is None:
      head = MotionHead(
        self.cfg["motion_hidden"], self.cfg["motion_dim"], self.setup.dtype
      )
      self._motion_fn = jax.jit(lambda p, e: head.apply({"params": p}, e))
    emb = np.asarray(feats["emb"], np.float32)
    motion = self._motion_fn(params["motion"], emb)
    ident = np.asarray(feats["eval"], np.float64)
    ident /= np.maximum(np.linalg.norm(ident, axis=1, keepdims=True), 1e-12)
    return {
      "identity": ident.astype(np.float32),
      "motion": sharding.to_host(motion),
      "trunk": emb,
    }


def _num_tracklets(inp) -> int:
  """Tracklets of the training split (the margin-softmax classes)."""
  from idlearn import data

  builder = data.prepare(
    inp["name"],
    data_dir=inp["data_dir"] or None,
    manual_dir=inp["manual_dir"] or None,
  )
  meta = data.split_meta(builder, inp["split"])
  return int(meta["tracklet"].max()) + 1


METHODS = (AniTalker,)

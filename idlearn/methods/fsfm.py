"""FSFM (FSFM-3C): masked image modelling with CRFR-P facial-region masking
plus instance discrimination by self-distillation from an EMA teacher.

Wang et al., "A Generalizable Face Security Foundation Model via
Self-Supervised Facial Representation Learning", CVPR 2025; official code
wolo-wolo/FSFM-CVPR25 (`fsfm-3c/models_fsfm.py`, `pretrain/
engine_pretrain.py`, `util/datasets.py`). One step, on one view of each
image (official: no augmentation, the unmasked image for the target):

  M, S  = CRFR-P mask of the batch (`mining.fsfm_masks`): 75% of the
          patches, one facial region S fully covered
  h     = Enc(visible patches)                    ViT on the unmasked 25%
  x^    = PixDec(h)                               MAE decoder -> all patches
  f_o   = q(g(mean RepDec(h)))                    rep decoder: full sequence
  f_t   = g_t(mean RepDec_t(Enc_t(image)))        EMA teacher, no mask
  L     = L_rec(x^, M) + w_sfr L_rec(x^, S) + w_cl (-1/2 cos(f_o, f_t))

with w_sfr = 0.007, w_cl = 0.1, norm-pix targets (`losses.fsfm`) and the
teacher's momentum on a cosine ramp 0.996 -> 1. The EMA copy here covers
the whole network (the loop keeps one); only its encoder, rep decoder and
projector are read, as in the official teacher. w_cl = 0 is the MIM-only
arm (no teacher call).

Retrieval feature: the encoder's pooled embedding on the unmasked image
(`encoders.Backbone` with neck "none"; with config.model.encoder_kw
pooling="mean", the mean of the normed patch tokens, the feature MAE-style
fine-tuning pools).

Assumptions (not the official code): the facial regions come from one
fixed layout of roughly aligned crops instead of per-image parsing maps
(`fsfm_masks.face_layout`); the encoder keeps idlearn's ViT (learned
position embeddings, flax default initialisers) where MAE uses fixed
sin-cos ones and xavier init; the decoders use fixed 2-D sin-cos
positions; the image normalisation is ImageNet's (official: the
pre-training set's mean / std); a non-finite L_cl stops the run (the loop's
rule) instead of skipping the batch; the masked count is floor(ratio * L).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from idlearn import losses
from idlearn.encoders import vit
from idlearn.errors import ConfigError
from idlearn.methods import base
from idlearn.mining import fsfm_masks

LAYOUTS = ("att_faces",)  # fixed region layouts (fsfm_masks.face_layout)


def sincos_2d(width: int, grid: tuple[int, int]) -> np.ndarray:
  """Fixed 2-D sin-cos position embeddings (MAE), class token first.

  Args:
    width: embedding width, a multiple of 4.
    grid: (gh, gw) patch grid.
  Returns:
    float32 [1 + gh * gw, width]: row 0 (class token) zeros; patch (i, j)
    has sin / cos of i in the first half and of j in the second.
  """
  if width % 4:
    raise ValueError(f"sin-cos positions need a width divisible by 4: {width}")
  gh, gw = grid
  omega = 1.0 / 10000 ** (np.arange(width // 4) / (width // 4))  # [w/4]

  def one_axis(pos):  # [L] -> [L, width / 2]
    out = pos[:, None] * omega[None, :]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
  emb = np.concatenate(
    [one_axis(rows.reshape(-1)), one_axis(cols.reshape(-1))], axis=1
  )
  return np.concatenate([np.zeros((1, width)), emb]).astype(np.float32)


class TokenDecoder(nn.Module):
  """MAE-style decoder: encoded visible tokens -> the full token sequence.

  Linear to `width`, a learned mask token at every dropped position, fixed
  sin-cos positions, `depth` pre-norm ViT blocks, LayerNorm, Linear to
  `out_dim`. FSFM's rep decoder (out_dim = encoder width, 2 blocks) and
  pixel decoder (out_dim = p * p * 3, 8 blocks) are two of these.

  Attributes:
    width, depth, num_heads: transformer size.
    out_dim: output width.
    grid: (gh, gw) patch grid.
    dtype: compute dtype; params stay float32.
  """

  width: int
  depth: int
  num_heads: int
  out_dim: int
  grid: tuple[int, int]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, keep: jax.Array | None = None):
    """[n, 1 + k, D] (class token first) and keep int32 [n, k] (None: all
    L patches) -> float32 [n, 1 + L, out_dim] in patch-grid order."""
    n, length = tokens.shape[0], self.grid[0] * self.grid[1]
    x = nn.Dense(self.width, dtype=self.dtype, name="embed")(tokens)
    mask_token = self.param(
      "mask_token", nn.initializers.normal(0.02), (1, 1, self.width)
    )
    if keep is None:
      if tokens.shape[1] != 1 + length:
        raise ValueError(f"tokens {tokens.shape}: expected 1 + {length}")
      patches = x[:, 1:]
    else:  # visible tokens back to their places, mask tokens elsewhere
      patches = jnp.broadcast_to(
        mask_token.astype(x.dtype), (n, length, self.width)
      )
      patches = patches.at[jnp.arange(n)[:, None], keep].set(x[:, 1:])
    x = jnp.concatenate([x[:, :1], patches], axis=1)
    x = x + jnp.asarray(sincos_2d(self.width, self.grid), x.dtype)
    for i in range(self.depth):
      x = vit.Block(self.num_heads, dtype=self.dtype, name=f"blocks_{i}")(x)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    x = nn.Dense(self.out_dim, dtype=self.dtype, name="head")(x)
    return x.astype(jnp.float32)


class ByolMLP(nn.Module):
  """FSFM's projector / predictor: Dense -> LayerNorm -> ReLU -> Dense."""

  hidden: int
  out_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[b, d] -> float32 [b, out_dim]."""
    x = nn.Dense(self.hidden, dtype=self.dtype, name="dense0")(x)
    x = nn.relu(nn.LayerNorm(dtype=self.dtype, name="norm0")(x))
    x = nn.Dense(self.out_dim, dtype=self.dtype, name="dense1")(x)
    return x.astype(jnp.float32)


class FSFMNet(nn.Module):
  """ViT encoder + rep decoder + pixel decoder + projector + predictor.

  `__call__` is the online network (on the visible patches when `keep` is
  given), `target` the teacher's branch (encoder, rep decoder, projector on
  the whole image). Parameters: "encoder" (the retrieval `Backbone`'s),
  "rep_decoder", "pixel_decoder", "projector", "predictor".
  """

  encoder: nn.Module  # an encoders.vit.ViT
  rep_width: int = 768
  rep_depth: int = 2
  rep_heads: int = 16
  pix_width: int = 512
  pix_depth: int = 8
  pix_heads: int = 16
  proj_hidden: int = 4096
  proj_out: int = 256
  pred_hidden: int = 4096
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    grid, p = tuple(self.encoder.grid), self.encoder.patch
    self.rep_decoder = TokenDecoder(
      self.rep_width, self.rep_depth, self.rep_heads, self.encoder.width,
      grid, self.dtype,
    )  # fmt: skip
    self.pixel_decoder = TokenDecoder(
      self.pix_width, self.pix_depth, self.pix_heads, p * p * 3, grid,
      self.dtype,
    )  # fmt: skip
    self.projector = ByolMLP(self.proj_hidden, self.proj_out, self.dtype)
    self.predictor = ByolMLP(self.pred_hidden, self.proj_out, self.dtype)

  def _branch(self, images, keep, train):
    emb, aux = self.encoder(images, train=train, keep=keep)
    rep = self.rep_decoder(aux["tokens"], keep)  # [n, 1 + L, D]
    # the global feature: mean over every rep-decoder token, class included
    return emb.astype(jnp.float32), aux["tokens"], self.projector(rep.mean(1))

  def __call__(
    self, images: jax.Array, train: bool = False, keep: jax.Array | None = None
  ) -> dict[str, jax.Array]:
    """Online network.

    Args:
      images: float32 [n, h, w, 3] (the encoder's img_size), normalised.
      train: training mode.
      keep: int32 [n, k] visible patch indices (`fsfm_masks.
        visible_indices`), or None: every patch.
    Returns:
      "emb" = "eval" float32 [n, D] (the encoder's pooled embedding over
      the encoded patches), "proj" [n, proj_out] (g), "pred" [n, proj_out]
      (q(g)), "pixels" [n, L, p * p * 3] (the pixel decoder's patches).
    """
    emb, tokens, z = self._branch(images, keep, train)
    pixels = self.pixel_decoder(tokens, keep)[:, 1:]
    return {
      "emb": emb, "eval": emb, "proj": z, "pred": self.predictor(z),
      "pixels": pixels,
    }  # fmt: skip

  def target(self, images: jax.Array, train: bool = False):
    """Teacher branch on whole images: {"emb", "eval", "proj"} as above."""
    emb, _, z = self._branch(images, None, train)
    return {"emb": emb, "eval": emb, "proj": z}


class FSFM(base.Method):
  NAMES = ("fsfm",)
  VIEWS = {"image": 1}
  FIELDS = {
    "mask_ratio": 0.75,
    "w_sfr": 0.007,  # L_rec on the fully covered region
    "w_cl": 0.1,  # L_cl (0: MIM only, no teacher call)
    "norm_pix": True,
    "layout": "att_faces",  # the fixed facial-region layout (assumption)
    "ema_decay": 0.996,  # teacher momentum at step 0
    "ema_end_decay": 1.0,  # cosine ramp to it (0: constant)
    # official sizes (ViT-B): rep decoder 768 x 2 blocks x 16 heads, pixel
    # decoder 512 x 8 x 16, BYOL MLPs 4096 -> 256
    "rep_width": 768,
    "rep_depth": 2,
    "rep_heads": 16,
    "pix_width": 512,
    "pix_depth": 8,
    "pix_heads": 16,
    "proj_hidden": 4096,
    "proj_out": 256,
    "pred_hidden": 4096,
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    fail = lambda msg: base.field_error(name, msg)
    if not 0 < cfg["mask_ratio"] < 1:
      raise fail(f"mask_ratio={cfg['mask_ratio']}: expected in (0, 1)")
    if cfg["w_sfr"] < 0 or cfg["w_cl"] < 0:
      raise fail(f"w_sfr={cfg['w_sfr']}, w_cl={cfg['w_cl']}: expected >= 0")
    if cfg["w_cl"] > 0 and not cfg["ema_decay"] > 0:
      raise fail(
        f"w_cl={cfg['w_cl']} distils from the EMA teacher: ema_decay="
        f"{cfg['ema_decay']} must be in (0, 1)"
      )
    if cfg["layout"] not in LAYOUTS:
      raise fail(f"layout={cfg['layout']!r}: expected one of {LAYOUTS}")
    for key in ("rep_width", "pix_width"):
      if cfg[key] % 4 or cfg[key] % cfg[key.replace("width", "heads")]:
        raise fail(
          f"{key}={cfg[key]}: must divide by 4 (sin-cos positions) and by "
          "its heads"
        )
    encoder = setup.make_encoder()
    if not isinstance(encoder, vit.ViT):
      raise ConfigError(
        f"config.model.encoder: method {name!r} masks ViT patches; got "
        f"{type(encoder).__name__}"
      )
    self.patch = encoder.patch
    grid = encoder.grid
    self.regions = fsfm_masks.face_layout(tuple(encoder.img_size), self.patch)
    length = grid[0] * grid[1]
    self.num_visible = length - fsfm_masks.num_masked(length, cfg["mask_ratio"])
    if self.num_visible < 1:
      raise fail(f"mask_ratio={cfg['mask_ratio']} leaves no visible patch")

  def network(self) -> nn.Module:
    cfg = self.cfg
    sizes = ("rep_width", "rep_depth", "rep_heads", "pix_width", "pix_depth",
             "pix_heads", "proj_hidden", "proj_out", "pred_hidden")  # fmt: skip
    return FSFMNet(
      encoder=self.setup.make_encoder(),
      dtype=self.setup.dtype,
      **{k: cfg[k] for k in sizes},
    )

  def ema_decay(self):
    cfg = self.cfg
    return base.ema_schedule(
      cfg["ema_decay"], cfg["ema_end_decay"], self.setup.total_steps
    )

  def masks(self, rng: jax.Array, batch_size: int):
    """(mask, region, chosen) of a batch: `fsfm_masks.crfrp_masks`."""
    return fsfm_masks.crfrp_masks(
      rng, self.regions, batch_size, mask_ratio=self.cfg["mask_ratio"]
    )

  def loss(self, net, views, batch, ctx):
    cfg = self.cfg
    x = base.first(views, "image")  # [b, h, w, 3]
    mask, region, _ = self.masks(ctx.rng, x.shape[0])  # bool [b, L]
    keep = fsfm_masks.visible_indices(mask, self.num_visible)  # [b, k]
    out = net(x, keep=keep)
    patches = losses.patchify(x, self.patch)  # [b, L, p * p * 3]
    rec = lambda m: losses.masked_reconstruction(
      out["pixels"], patches, m, norm_pix=cfg["norm_pix"]
    )
    rec_all, _ = rec(mask)
    rec_sfr, sfr = rec(region)
    value = rec_all + cfg["w_sfr"] * rec_sfr
    aux = {
      "rec_all": rec_all, "rec_sfr": rec_sfr,
      "sfr_patches": sfr["patches"],
    }  # fmt: skip
    if cfg["w_cl"] > 0:
      target = net.teacher(x, method=FSFMNet.target)
      cl, cl_aux = losses.negative_cosine(out["pred"], target["proj"])
      value = value + cfg["w_cl"] * cl
      aux.update(cl=cl, cos=cl_aux["cos"])
    return value, aux, ctx.extras


METHODS = (FSFM,)

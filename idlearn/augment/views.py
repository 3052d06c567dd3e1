"""Multi-view augmentation of a uint8 batch, on device, under `jit`.

A view is described by a plain mapping (a config's `views.<name>` dict);
every key is optional:

  size: (h, w) output size; default the input size.
  crop_scale: random resized crop area range, e.g. (0.2, 1.0); None (default)
    resizes the whole image.
  crop_ratio: crop aspect (w/h, input pixels) range, log-uniform;
    default (3/4, 4/3).
  flip: horizontal flip probability.
  pad: re-ID pad + random crop, pixels per side.
  color_jitter: s -> (s, s, s, s/4), or (brightness, contrast, saturation,
    hue); color_p: probability of applying it (default 0.8).
  grayscale: probability.
  blur: Gaussian blur probability; blur_sigma: sigma range (0.1, 2.0).
  erasing: random erasing probability; erasing_scale (0.02, 0.4),
    erasing_ratio (0.3, 3.3).
  style_standardization: BSS probability (drawn once per batch);
    style_ratio: low-frequency window range (0.05, 0.2).
Probabilities default to 0 (op off).

Order: crop/resize, pad-crop, flip, colour, grayscale, blur, BSS,
normalise (ImageNet mean/std), erasing (fills the mean colour).

With `with_params=True`, `make_views` also returns what each view drew, as
float32 [b, len(PARAM_NAMES)] per view (equivariant methods such as SIE
condition on them). Every entry is 0 when its op did not change the image:
  crop_y, crop_x: crop centre minus image centre, fractions of the input
    height / width; crop_scale: log(crop area / image area);
    crop_aspect: log((crop w / crop h) / (W / H)), the stretch the resize
    to `size` applies (0 without a crop);
  pad_y, pad_x: pad-crop window offset, fractions of the output size;
  flip: 1 if mirrored;
  brightness, contrast, saturation: log of the jitter factor; hue: shift
    in turns (0 where the jitter was not applied);
  grayscale: 1 if applied; blur: sigma in pixels (0: not blurred);
  style: 1 if BSS was applied (to the whole batch);
  erasing: erased fraction of the image (0: none).
`relative_params` turns the two views' parameters into the transformation
from one to the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from idlearn.augment import ops, style

_DEFAULTS = {
  "size": None,
  "crop_scale": None,
  "crop_ratio": (3 / 4, 4 / 3),
  "flip": 0.0,
  "pad": 0,
  "color_jitter": 0.0,
  "color_p": 0.8,
  "grayscale": 0.0,
  "blur": 0.0,
  "blur_sigma": (0.1, 2.0),
  "erasing": 0.0,
  "erasing_scale": (0.02, 0.4),
  "erasing_ratio": (0.3, 3.3),
  "style_standardization": 0.0,
  "style_ratio": (0.05, 0.2),
}


PARAM_NAMES = (
  "crop_y",
  "crop_x",
  "crop_scale",
  "crop_aspect",
  "pad_y",
  "pad_x",
  "flip",
  "brightness",
  "contrast",
  "saturation",
  "hue",
  "grayscale",
  "blur",
  "style",
  "erasing",
)
# Involutions: the transformation between two views is "whether they
# differ", whichever was applied (see `relative_params`).
_SYMMETRIC = ("flip",)


def params_role(role: str) -> str:
  """The key under which a views function gives the augmentation
  parameters of role `role`'s views (see `training.inputs`)."""
  return f"{role}.params"


def _spec(spec: Mapping, shape: tuple[int, int]) -> dict:
  """Spec with defaults filled; unknown keys are errors (typos)."""
  spec = dict(spec.items())
  unknown = sorted(set(spec) - set(_DEFAULTS))
  if unknown:
    raise ValueError(
      f"view spec keys {unknown} unknown: expected some of {sorted(_DEFAULTS)}"
    )
  s = _DEFAULTS | spec
  s["size"] = tuple(int(v) for v in (s["size"] or shape))
  cj = s["color_jitter"]
  if isinstance(cj, int | float):
    cj = (cj, cj, cj, cj / 4)
  if len(cj) != 4:
    raise ValueError(f"color_jitter={cj}: expected a float or 4 floats")
  s["color_jitter"] = tuple(float(v) for v in cj)
  return s


def normalize(x: jax.Array, channel_axis: int = -1) -> jax.Array:
  """Images in [0, 1] -> ImageNet-standardised (channels on channel_axis)."""
  shape = [1] * x.ndim
  shape[channel_axis] = 3
  mean = jnp.asarray(ops.IMAGENET_MEAN, x.dtype).reshape(shape)
  std = jnp.asarray(ops.IMAGENET_STD, x.dtype).reshape(shape)
  return (x - mean) / std


def _apply(u: jax.Array, p: float, fn, img: jax.Array) -> jax.Array:
  """fn(img) with probability p (u ~ U[0, 1)); static p == 0 costs nothing."""
  if p <= 0:
    return img
  if p >= 1:
    return fn(img)
  return jnp.where(u < p, fn(img), img)


def _applied(u: jax.Array, p: float) -> jax.Array:
  """float32 [] 1 where `_apply(u, p, ...)` applies its op, else 0."""
  if p <= 0 or p >= 1:
    return jnp.asarray(float(p >= 1), jnp.float32)
  return (u < p).astype(jnp.float32)


def _per_image(
  k: jax.Array, img: jax.Array, s: dict
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Geometric and colour ops of one planar image: [3, H, W] -> [3, h, w],
  and {name: float32 []} of the parameters it drew (see PARAM_NAMES)."""
  _, hh, ww = img.shape
  ks = jax.random.split(k, 6)
  u = jax.random.uniform(ks[5], (4,))
  zero = jnp.zeros((), jnp.float32)
  p = {}
  if s["crop_scale"] is not None:
    box = ops.crop_box(ks[0], (hh, ww), s["crop_scale"], s["crop_ratio"])
    img = ops.resized_crop(img, box, s["size"])
    fy, fx = box[2] / hh, box[3] / ww  # crop size, fractions of the image
    p["crop_y"] = box[0] / hh + fy / 2 - 0.5
    p["crop_x"] = box[1] / ww + fx / 2 - 0.5
    p["crop_scale"] = jnp.log(fy * fx)
    p["crop_aspect"] = jnp.log(fx / fy)
  elif s["size"] != (hh, ww):
    img = ops.resized_crop(img, jnp.array([0.0, 0.0, hh, ww]), s["size"])
  if s["pad"]:
    pad = int(s["pad"])
    offsets = ops.pad_offsets(ks[1], pad)
    img = ops.shift_crop(img, pad, offsets)
    p["pad_y"] = (offsets[0] - pad) / img.shape[1]
    p["pad_x"] = (offsets[1] - pad) / img.shape[2]
  img = _apply(u[0], s["flip"], lambda t: t[:, :, ::-1], img)
  p["flip"] = _applied(u[0], s["flip"])
  if max(s["color_jitter"]) > 0:
    cj = s["color_jitter"]
    factors = ops.jitter_factors(ks[2], cj)
    img = _apply(
      u[1], s["color_p"], lambda t: ops.apply_jitter(t, factors, cj), img
    )
    on = _applied(u[1], s["color_p"])
    # log of the factors (clipped: a strength >= 1 can draw 0)
    logs = jnp.log(jnp.maximum(factors[:3], 1e-6)) * on
    p["brightness"], p["contrast"], p["saturation"] = logs[0], logs[1], logs[2]
    p["hue"] = factors[3] * on
  img = _apply(u[2], s["grayscale"], ops.grayscale, img)
  p["grayscale"] = _applied(u[2], s["grayscale"])
  if s["blur"] > 0:
    sigma = ops.blur_sigma(ks[3], s["blur_sigma"])
    img = _apply(u[3], s["blur"], lambda t: ops.blur(t, sigma), img)
    p["blur"] = sigma * _applied(u[3], s["blur"])
  p = {
    name: jnp.asarray(p.get(name, zero), jnp.float32) for name in PARAM_NAMES
  }
  return img, p


def _one_view(
  key: jax.Array, images: jax.Array, s: dict
) -> tuple[jax.Array, jax.Array]:
  """uint8 [b, H, W, 3] -> float32 [b, h, w, 3] for one view spec, and the
  parameters it drew, float32 [b, len(PARAM_NAMES)]."""
  b = images.shape[0]
  # Planar [b, 3, H, W] inside (see ops); one transpose in, one out.
  x = images.astype(jnp.float32).transpose(0, 3, 1, 2) / 255.0
  k_img, k_bss, k_erase = jax.random.split(key, 3)
  x, p = jax.vmap(lambda k, t: _per_image(k, t, s))(
    jax.random.split(k_img, b), x
  )
  if s["style_standardization"] > 0:
    k_u, k_style = jax.random.split(k_bss)
    u = jax.random.uniform(k_u, ())
    x = _apply(
      u,
      s["style_standardization"],
      lambda t: style.standardize_styles(
        k_style, t, s["style_ratio"], spatial_axes=(2, 3)
      ),
      x,
    )
    p["style"] = jnp.broadcast_to(_applied(u, s["style_standardization"]), (b,))
  x = normalize(x, channel_axis=1)
  if s["erasing"] > 0:
    _, _, h, w = x.shape

    def erase(k, img):
      k_u, k_e = jax.random.split(k)
      box = ops.erasing_box(k_e, (h, w), s["erasing_scale"], s["erasing_ratio"])
      u = jax.random.uniform(k_u, ())
      img = _apply(u, s["erasing"], lambda t: ops.erase(t, box), img)
      return img, box[2] * box[3] / (h * w) * _applied(u, s["erasing"])

    x, p["erasing"] = jax.vmap(erase)(jax.random.split(k_erase, b), x)
  params = jnp.stack([p[name] for name in PARAM_NAMES], axis=1)
  return x.transpose(0, 2, 3, 1), params


def make_views(
  rng: jax.Array,
  images: jax.Array,
  specs: Sequence[Mapping],
  *,
  with_params: bool = False,
) -> (
  tuple[jax.Array, ...] | tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]
):
  """Independently augmented views of a batch (one per spec).

  Jittable (specs are static Python values); every sample and view draws
  its own parameters from `rng`. The views do not depend on `with_params`.

  Args:
    rng: PRNG key.
    images: uint8 [b, H, W, 3].
    specs: one mapping per view (keys: see the module docstring).
    with_params: also return the parameters each view drew.
  Returns:
    tuple of float32 [b, h, w, 3] (h, w from each spec's size), normalised
    with the ImageNet mean/std; with `with_params`, (views, params): params
    a tuple of float32 [b, len(PARAM_NAMES)], one per view (see the module
    docstring).
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images: expected [b, H, W, 3], got {images.shape}")
  shape = tuple(images.shape[1:3])
  out = [
    _one_view(jax.random.fold_in(rng, v), images, _spec(spec, shape))
    for v, spec in enumerate(specs)
  ]
  views = tuple(x for x, _ in out)
  return (views, tuple(p for _, p in out)) if with_params else views


def relative_params(
  p1: jax.Array, p2: jax.Array, names: Sequence[str] = PARAM_NAMES
) -> jax.Array:
  """The transformation from view 1 to view 2 in parameter space.

  p2 - p1 for each of `names` (log-scale entries give log ratios: relative
  zoom, stretch, brightness), except for involutions (flip), whose
  transformation is |p2 - p1| (1: the views differ by a mirror, whichever
  was mirrored).

  Args:
    p1, p2: float32 [b, len(PARAM_NAMES)] parameters of the two views.
    names: the entries to return, in this order (of PARAM_NAMES).
  Returns:
    float32 [b, len(names)].
  Raises:
    ValueError: a name not in PARAM_NAMES.
  """
  unknown = [n for n in names if n not in PARAM_NAMES]
  if unknown:
    raise ValueError(
      f"augmentation parameters {unknown} unknown: expected some of "
      f"{list(PARAM_NAMES)}"
    )
  cols = []
  for name in names:
    i = PARAM_NAMES.index(name)
    d = p2[:, i] - p1[:, i]
    cols.append(jnp.abs(d) if name in _SYMMETRIC else d)
  return jnp.stack(cols, axis=1).astype(jnp.float32)


def preprocess(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Evaluation path: uint8 [b, H, W, 3] -> float32 [b, h, w, 3], resized
  (bilinear, antialiased) and normalised with the ImageNet mean/std."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images: expected [b, H, W, 3], got {images.shape}")
  b, _, _, c = images.shape
  x = images.astype(jnp.float32) / 255.0
  if tuple(images.shape[1:3]) != tuple(size):
    x = jax.image.resize(x, (b, *size, c), "linear", antialias=True)
  return normalize(x)

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


def _per_image(k: jax.Array, img: jax.Array, s: dict) -> jax.Array:
  """Geometric and colour ops of one planar image: [3, H, W] -> [3, h, w]."""
  _, hh, ww = img.shape
  ks = jax.random.split(k, 6)
  u = jax.random.uniform(ks[5], (4,))
  if s["crop_scale"] is not None:
    box = ops.crop_box(ks[0], (hh, ww), s["crop_scale"], s["crop_ratio"])
    img = ops.resized_crop(img, box, s["size"])
  elif s["size"] != (hh, ww):
    img = ops.resized_crop(img, jnp.array([0.0, 0.0, hh, ww]), s["size"])
  if s["pad"]:
    img = ops.pad_crop(ks[1], img, int(s["pad"]))
  img = _apply(u[0], s["flip"], lambda t: t[:, :, ::-1], img)
  if max(s["color_jitter"]) > 0:
    jitter = lambda t: ops.color_jitter(ks[2], t, s["color_jitter"])
    img = _apply(u[1], s["color_p"], jitter, img)
  img = _apply(u[2], s["grayscale"], ops.grayscale, img)
  blur = lambda t: ops.gaussian_blur(ks[3], t, s["blur_sigma"])
  return _apply(u[3], s["blur"], blur, img)


def _one_view(key: jax.Array, images: jax.Array, s: dict) -> jax.Array:
  """uint8 [b, H, W, 3] -> float32 [b, h, w, 3] for one view spec."""
  b = images.shape[0]
  # Planar [b, 3, H, W] inside (see ops); one transpose in, one out.
  x = images.astype(jnp.float32).transpose(0, 3, 1, 2) / 255.0
  k_img, k_bss, k_erase = jax.random.split(key, 3)
  x = jax.vmap(lambda k, t: _per_image(k, t, s))(jax.random.split(k_img, b), x)
  if s["style_standardization"] > 0:
    k_u, k_style = jax.random.split(k_bss)
    x = _apply(
      jax.random.uniform(k_u, ()),
      s["style_standardization"],
      lambda t: style.standardize_styles(
        k_style, t, s["style_ratio"], spatial_axes=(2, 3)
      ),
      x,
    )
  x = normalize(x, channel_axis=1)
  if s["erasing"] > 0:

    def erase(k, img):
      k_u, k_e = jax.random.split(k)
      fn = lambda t: ops.random_erasing(
        k_e, t, s["erasing_scale"], s["erasing_ratio"]
      )
      return _apply(jax.random.uniform(k_u, ()), s["erasing"], fn, img)

    x = jax.vmap(erase)(jax.random.split(k_erase, b), x)
  return x.transpose(0, 2, 3, 1)


def make_views(
  rng: jax.Array,
  images: jax.Array,
  specs: Sequence[Mapping],
) -> tuple[jax.Array, ...]:
  """Independently augmented views of a batch (one per spec).

  Jittable (specs are static Python values); every sample and view draws
  its own parameters from `rng`.

  Args:
    rng: PRNG key.
    images: uint8 [b, H, W, 3].
    specs: one mapping per view (keys: see the module docstring).
  Returns:
    tuple of float32 [b, h, w, 3] (h, w from each spec's size), normalised
    with the ImageNet mean/std.
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images: expected [b, H, W, 3], got {images.shape}")
  shape = tuple(images.shape[1:3])
  return tuple(
    _one_view(jax.random.fold_in(rng, v), images, _spec(spec, shape))
    for v, spec in enumerate(specs)
  )


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

"""Per-image random augmentations on planar float [c, h, w] images in [0, 1].

Each op takes a PRNG key and one image and is meant to be `vmap`ped over the
batch with one key per sample, so every sample draws its own parameters.
All shapes are static; random parameters are traced values, so one compiled
function serves every draw.

Images are channel-planar ([3, h, w], not [h, w, 3]) inside the ops: per
channel arithmetic (luma, HSV) and row/column shifts then read contiguous
memory, which makes them 2-3x faster on CPU. `views` transposes once in
and once out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL / torchvision


def luma(img: jax.Array) -> jax.Array:
  """[3, h, w] -> [h, w]."""
  return _LUMA[0] * img[0] + _LUMA[1] * img[1] + _LUMA[2] * img[2]


def grayscale(img: jax.Array) -> jax.Array:
  """[3, h, w] -> [3, h, w] luma in every channel."""
  return jnp.broadcast_to(luma(img)[None], img.shape)


def _frac(x: jax.Array) -> jax.Array:
  return x - jnp.floor(x)  # x mod 1; vectorises where fmod does not


def _bilinear_taps(start, length, n_out: int, n_in: int):
  """Source indices (i0, i1) and weight of i1 for n_out outputs (half-pixel
  centres, edges clamped: a triangle filter when upsampling)."""
  pos = start + (jnp.arange(n_out) + 0.5) * (length / n_out) - 0.5
  pos = jnp.clip(pos, 0.0, n_in - 1.0)
  i0 = jnp.floor(pos).astype(jnp.int32)
  return i0, jnp.minimum(i0 + 1, n_in - 1), pos - i0


def resized_crop(
  img: jax.Array,
  box: jax.Array,
  size: tuple[int, int],
) -> jax.Array:
  """Bilinear resize of the crop `box` of img to `size`.

  When the input is no larger than the output (the loader already resized
  to the training size), crops only ever upsample: plain bilinear from 4
  gathered taps. Otherwise antialiased (triangle filter widened by the
  downscale factor, as PIL) via `jax.image.scale_and_translate`.

  Args:
    img: [c, H, W].
    box: [4] float (y0, x0, height, width) in input pixels.
    size: (h, w) output size.
  Returns:
    [c, h, w].
  """
  h, w = size
  c, hh, ww = img.shape
  if hh > h or ww > w:
    scale = jnp.stack([h / box[2], w / box[3]])
    # scale_and_translate maps input coordinate y to y * scale + translation.
    translation = -box[:2] * scale
    return jax.image.scale_and_translate(
      img, (c, h, w), (1, 2), scale, translation, method="linear",
      antialias=True,
    )  # fmt: skip
  y0, y1, wy = _bilinear_taps(box[0], box[2], h, hh)
  x0, x1, wx = _bilinear_taps(box[1], box[3], w, ww)
  rows = img[:, y0] * (1 - wy)[:, None] + img[:, y1] * wy[:, None]
  # Columns as a product with the [W, w] interpolation matrix, not a second
  # gather: a dot's result is materialised, whereas XLA would fuse (and
  # recompute) the gathers inside every later op (measured 4x slower).
  cols = (
    jax.nn.one_hot(x0, ww, axis=0) * (1 - wx)
    + jax.nn.one_hot(x1, ww, axis=0) * wx
  )  # [W, w]
  return jnp.einsum(
    "chW,Ww->chw", rows, cols, precision=jax.lax.Precision.HIGHEST
  )


def crop_box(
  key: jax.Array,
  shape: tuple[int, int],
  scale: tuple[float, float],
  ratio: tuple[float, float],
) -> jax.Array:
  """Random resized crop box (Szegedy et al. 2015; torchvision's ranges).

  Area fraction ~ U(scale), aspect ratio w/h log-uniform in `ratio`; a box
  that does not fit is shrunk to fit (instead of torchvision's 10 retries).

  Args:
    shape: (H, W) of the image.
  Returns:
    [4] float (y0, x0, height, width).
  """
  hh, ww = shape
  k1, k2, k3, k4 = jax.random.split(key, 4)
  area = jax.random.uniform(k1, (), minval=scale[0], maxval=scale[1]) * hh * ww
  log_r = jax.random.uniform(
    k2, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])
  )
  ch = jnp.clip(jnp.sqrt(area / jnp.exp(log_r)), 1.0, hh)
  cw = jnp.clip(jnp.sqrt(area * jnp.exp(log_r)), 1.0, ww)
  y0 = jax.random.uniform(k3, ()) * (hh - ch)
  x0 = jax.random.uniform(k4, ()) * (ww - cw)
  return jnp.stack([y0, x0, ch, cw])


def pad_offsets(key: jax.Array, pad: int) -> jax.Array:
  """The random corner (oy, ox) of `pad_crop`: int32 [2] in [0, 2 * pad]."""
  return jax.random.randint(key, (2,), 0, 2 * pad + 1)


def shift_crop(img: jax.Array, pad: int, offsets: jax.Array) -> jax.Array:
  """Zero-pad `pad` px per side, crop [c, h, w] at `offsets` (oy, ox)."""
  c, h, w = img.shape
  padded = jnp.pad(img, ((0, 0), (pad, pad), (pad, pad)))
  return jax.lax.dynamic_slice(padded, (0, offsets[0], offsets[1]), (c, h, w))


def pad_crop(key: jax.Array, img: jax.Array, pad: int) -> jax.Array:
  """Re-ID pad + random crop: zero-pad `pad` px per side, crop [c, h, w]."""
  return shift_crop(img, pad, pad_offsets(key, pad))


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """[3, ...] RGB in [0, 1] -> [3, ...] HSV (h in turns), as colorsys."""
  r, g, b = rgb[0], rgb[1], rgb[2]
  v = jnp.maximum(jnp.maximum(r, g), b)
  delta = v - jnp.minimum(jnp.minimum(r, g), b)
  s = jnp.where(v > 0, delta / jnp.where(v > 0, v, 1.0), 0.0)
  safe = jnp.where(delta > 0, delta, 1.0)
  h = jnp.where(
    v == r,
    (g - b) / safe,
    jnp.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
  )
  h = jnp.where(delta > 0, _frac(h / 6.0), 0.0)
  return jnp.stack([h, s, v])


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """[3, ...] HSV -> [3, ...] RGB (inverse of `rgb_to_hsv`)."""
  h, s, v = hsv[0], hsv[1], hsv[2]
  # Piecewise-linear form: channel n uses k = (n + 6h) mod 6.
  out = []
  for n in (5.0, 3.0, 1.0):
    k = 6.0 * _frac((n + 6.0 * h) / 6.0)
    out.append(v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
  return jnp.stack(out)


def jitter_factors(
  key: jax.Array, strength: tuple[float, float, float, float]
) -> jax.Array:
  """The random draws of `color_jitter`: float32 [4] (brightness, contrast,
  saturation factors, hue shift in turns); 1, 1, 1, 0 where a strength is 0.
  """
  kb, kc, ks, kh = jax.random.split(key, 4)

  def factor(k, s):
    if s <= 0:
      return jnp.ones((), jnp.float32)
    return jax.random.uniform(k, (), minval=max(0.0, 1.0 - s), maxval=1 + s)

  bri, con, sat, hue = strength
  shift = jnp.zeros((), jnp.float32)
  if hue > 0:
    shift = jax.random.uniform(kh, (), minval=-hue, maxval=hue)
  return jnp.stack([factor(kb, bri), factor(kc, con), factor(ks, sat), shift])


def apply_jitter(
  img: jax.Array,
  factors: jax.Array,
  strength: tuple[float, float, float, float],
) -> jax.Array:
  """`color_jitter` with given `factors` ([4], see `jitter_factors`); the
  ops of zero strength are skipped."""
  bri, con, sat, hue = strength
  if bri > 0:
    img = jnp.clip(img * factors[0], 0.0, 1.0)
  if con > 0:
    mean = jnp.mean(luma(img))
    img = jnp.clip((img - mean) * factors[1] + mean, 0.0, 1.0)
  if sat > 0:
    gray = luma(img)[None]
    img = jnp.clip((img - gray) * factors[2] + gray, 0.0, 1.0)
  if hue > 0:
    hsv = rgb_to_hsv(img)
    hsv = hsv.at[0].set(_frac(hsv[0] + factors[3]))
    img = jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)
  return img


def color_jitter(
  key: jax.Array,
  img: jax.Array,
  strength: tuple[float, float, float, float],
) -> jax.Array:
  """Brightness, contrast, saturation, hue jitter (torchvision's ranges).

  Factors ~ U(max(0, 1 - s), 1 + s) for the first three, hue shift ~
  U(-s_hue, s_hue) turns of the colour wheel. Applied in this fixed order
  (torchvision shuffles the order), each clipped to [0, 1]; a zero strength
  skips its op.

  Args:
    img: [3, h, w] in [0, 1].
    strength: (brightness, contrast, saturation, hue).
  """
  return apply_jitter(img, jitter_factors(key, strength), strength)


def blur_sigma(
  key: jax.Array, sigma_range: tuple[float, float] = (0.1, 2.0)
) -> jax.Array:
  """The random sigma of `gaussian_blur`: float32 [] ~ U(sigma_range)."""
  return jax.random.uniform(
    key, (), minval=sigma_range[0], maxval=sigma_range[1]
  )


def blur(img: jax.Array, sigma: jax.Array) -> jax.Array:
  """Separable Gaussian blur of [c, h, w] with `sigma` (see below)."""
  _, h, w = img.shape
  radius = max(1, int(0.1 * min(h, w)) // 2)
  x = jnp.arange(-radius, radius + 1, dtype=img.dtype)
  k = jnp.exp(-0.5 * (x / sigma) ** 2)
  k = k / k.sum()  # [2r + 1]
  p = jnp.pad(img, ((0, 0), (radius, radius), (radius, radius)), "reflect")
  taps = range(2 * radius + 1)
  p = sum(k[i] * p[:, i : i + h] for i in taps)  # [c, h, w + 2r]
  return sum(k[i] * p[:, :, i : i + w] for i in taps)


def gaussian_blur(
  key: jax.Array,
  img: jax.Array,
  sigma_range: tuple[float, float] = (0.1, 2.0),
) -> jax.Array:
  """Separable Gaussian blur, sigma ~ U(sigma_range) (SimCLR).

  The kernel spans ~10% of the shorter side (SimCLR: 23 px at 224), edges
  reflected.

  Args:
    img: [c, h, w].
  """
  return blur(img, blur_sigma(key, sigma_range))


def erasing_box(
  key: jax.Array,
  shape: tuple[int, int],
  scale: tuple[float, float] = (0.02, 0.4),
  ratio: tuple[float, float] = (0.3, 3.3),
) -> jax.Array:
  """The random rectangle of `random_erasing` in an (h, w) image: float32
  [4] (y0, x0, height, width), whole pixels."""
  h, w = shape
  k1, k2, k3, k4 = jax.random.split(key, 4)
  area = jax.random.uniform(k1, (), minval=scale[0], maxval=scale[1]) * h * w
  log_r = jax.random.uniform(
    k2, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])
  )
  eh = jnp.clip(jnp.round(jnp.sqrt(area * jnp.exp(log_r))), 1, h)
  ew = jnp.clip(jnp.round(jnp.sqrt(area / jnp.exp(log_r))), 1, w)
  y0 = jnp.floor(jax.random.uniform(k3, ()) * (h - eh + 1))
  x0 = jnp.floor(jax.random.uniform(k4, ()) * (w - ew + 1))
  return jnp.stack([y0, x0, eh, ew])


def erase(img: jax.Array, box: jax.Array, value: float = 0.0) -> jax.Array:
  """[c, h, w] with the rectangle `box` (y0, x0, height, width) set to
  `value`."""
  _, h, w = img.shape
  y0, x0, eh, ew = box[0], box[1], box[2], box[3]
  yy = jnp.arange(h)[:, None]
  xx = jnp.arange(w)[None, :]
  inside = (yy >= y0) & (yy < y0 + eh) & (xx >= x0) & (xx < x0 + ew)
  return jnp.where(inside[None], value, img)


def random_erasing(
  key: jax.Array,
  img: jax.Array,
  scale: tuple[float, float] = (0.02, 0.4),
  ratio: tuple[float, float] = (0.3, 3.3),
  value: float = 0.0,
) -> jax.Array:
  """Random erasing (Zhong et al. 2020): one rectangle set to `value`.

  Area fraction ~ U(scale), aspect h/w log-uniform in `ratio`, clipped to
  the image. Run after normalisation, value 0 is the mean colour.

  Args:
    img: [c, h, w].
  """
  return erase(img, erasing_box(key, img.shape[1:], scale, ratio), value)

"""Per-image random augmentations on float [h, w, 3] images in [0, 1].

Each op takes a PRNG key and one image and is meant to be `vmap`ped over the
batch with one key per sample, so every sample draws its own parameters.
All shapes are static; random parameters are traced values, so one compiled
function serves every draw.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUMA = jnp.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL / torchvision


def grayscale(img: jax.Array) -> jax.Array:
  """[h, w, 3] -> [h, w, 3] luma in every channel."""
  return jnp.broadcast_to((img @ _LUMA)[..., None], img.shape)


def resized_crop(
  img: jax.Array,
  box: jax.Array,
  size: tuple[int, int],
) -> jax.Array:
  """Bilinear (antialiased) resize of the crop `box` of img to `size`.

  Args:
    img: [H, W, c].
    box: [4] float (y0, x0, height, width) in input pixels.
    size: (h, w) output size.
  Returns:
    [h, w, c].
  """
  h, w = size
  scale = jnp.stack([h / box[2], w / box[3]])
  # scale_and_translate maps input coordinate y to y * scale + translation.
  translation = -box[:2] * scale
  return jax.image.scale_and_translate(
    img,
    (h, w, img.shape[-1]),
    (0, 1),
    scale,
    translation,
    method="linear",
    antialias=True,
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


def pad_crop(key: jax.Array, img: jax.Array, pad: int) -> jax.Array:
  """Re-ID pad + random crop: zero-pad `pad` px per side, crop back [h, w]."""
  h, w, c = img.shape
  padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)))
  oy, ox = jax.random.randint(key, (2,), 0, 2 * pad + 1)
  return jax.lax.dynamic_slice(padded, (oy, ox, 0), (h, w, c))


def _rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = rgb.max(-1)
  delta = v - rgb.min(-1)
  s = jnp.where(v > 0, delta / jnp.where(v > 0, v, 1.0), 0.0)
  safe = jnp.where(delta > 0, delta, 1.0)
  h = jnp.where(
    v == r,
    (g - b) / safe,
    jnp.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
  )
  h = jnp.where(delta > 0, (h / 6.0) % 1.0, 0.0)
  return jnp.stack([h, s, v], -1)


def _hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  # Standard piecewise-linear form: channel n uses k = (n + 6h) mod 6.
  n = jnp.array([5.0, 3.0, 1.0])
  k = (n + h[..., None] * 6.0) % 6.0
  f = jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
  return v[..., None] - v[..., None] * s[..., None] * f


def color_jitter(
  key: jax.Array,
  img: jax.Array,
  strength: tuple[float, float, float, float],
) -> jax.Array:
  """Brightness, contrast, saturation, hue jitter (torchvision's ranges).

  Factors ~ U(max(0, 1 - s), 1 + s) for the first three, hue shift ~
  U(-s_hue, s_hue) turns of the colour wheel. Applied in this fixed order
  (torchvision shuffles the order), each clipped to [0, 1].

  Args:
    img: [h, w, 3] in [0, 1].
    strength: (brightness, contrast, saturation, hue).
  """
  bri, con, sat, hue = strength
  kb, kc, ks, kh = jax.random.split(key, 4)

  def factor(k, s):
    return jax.random.uniform(k, (), minval=max(0.0, 1.0 - s), maxval=1 + s)

  img = jnp.clip(img * factor(kb, bri), 0.0, 1.0)
  mean = jnp.mean(img @ _LUMA)
  img = jnp.clip((img - mean) * factor(kc, con) + mean, 0.0, 1.0)
  gray = grayscale(img)
  img = jnp.clip((img - gray) * factor(ks, sat) + gray, 0.0, 1.0)
  hsv = _rgb_to_hsv(img)
  shift = jax.random.uniform(kh, (), minval=-hue, maxval=hue)
  hsv = hsv.at[..., 0].set((hsv[..., 0] + shift) % 1.0)
  return jnp.clip(_hsv_to_rgb(hsv), 0.0, 1.0)


def gaussian_blur(
  key: jax.Array,
  img: jax.Array,
  sigma_range: tuple[float, float] = (0.1, 2.0),
) -> jax.Array:
  """Separable Gaussian blur, sigma ~ U(sigma_range) (SimCLR).

  The kernel spans ~10% of the shorter side (SimCLR: 23 px at 224), edges
  reflected.
  """
  h, w, _ = img.shape
  radius = max(1, int(0.1 * min(h, w)) // 2)
  sigma = jax.random.uniform(
    key, (), minval=sigma_range[0], maxval=sigma_range[1]
  )
  x = jnp.arange(-radius, radius + 1, dtype=img.dtype)
  k = jnp.exp(-0.5 * (x / sigma) ** 2)
  k = k / k.sum()  # [2r + 1]
  p = jnp.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
  p = sum(k[i] * p[i : i + h] for i in range(2 * radius + 1))  # [h, W+2r, 3]
  return sum(k[i] * p[:, i : i + w] for i in range(2 * radius + 1))


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
  """
  h, w, _ = img.shape
  k1, k2, k3, k4 = jax.random.split(key, 4)
  area = jax.random.uniform(k1, (), minval=scale[0], maxval=scale[1]) * h * w
  log_r = jax.random.uniform(
    k2, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])
  )
  eh = jnp.clip(jnp.round(jnp.sqrt(area * jnp.exp(log_r))), 1, h)
  ew = jnp.clip(jnp.round(jnp.sqrt(area / jnp.exp(log_r))), 1, w)
  y0 = jnp.floor(jax.random.uniform(k3, ()) * (h - eh + 1))
  x0 = jnp.floor(jax.random.uniform(k4, ()) * (w - ew + 1))
  yy = jnp.arange(h)[:, None]
  xx = jnp.arange(w)[None, :]
  inside = (yy >= y0) & (yy < y0 + eh) & (xx >= x0) & (xx < x0 + ew)
  return jnp.where(inside[..., None], value, img)

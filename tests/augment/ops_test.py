"""Per-image ops against NumPy / SciPy / colorsys / jax.image references.

The ops take planar [3, h, w] images; the tests build [h, w, 3] images and
convert with `_planar` / `_hwc`.
"""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from idlearn.augment import ops


def _img(h=12, w=8, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0, 1, (h, w, 3)).astype(np.float32)


def _planar(x):
  return jnp.moveaxis(jnp.asarray(x), -1, 0)


def _hwc(x):
  return np.moveaxis(np.asarray(x), 0, -1)


def test_hsv_matches_colorsys_and_round_trips():
  rgb = _img(6, 5)
  hsv = _hwc(jax.jit(ops.rgb_to_hsv)(_planar(rgb)))
  want = np.array([colorsys.rgb_to_hsv(*p) for p in rgb.reshape(-1, 3)])
  np.testing.assert_allclose(hsv.reshape(-1, 3), want, atol=1e-5)
  back = _hwc(jax.jit(ops.hsv_to_rgb)(_planar(hsv)))
  np.testing.assert_allclose(back, rgb, atol=1e-5)


def test_color_jitter_matches_numpy_reference():
  img = _img()
  key = jax.random.key(3)
  strength = (0.4, 0.4, 0.4, 0.1)
  jitter = jax.jit(ops.color_jitter, static_argnums=2)
  got = _hwc(jitter(key, _planar(img), strength))
  # Redraw the same factors and apply the torchvision formulas in float64.
  kb, kc, ks, kh = jax.random.split(key, 4)

  def f(k, s):
    return float(jax.random.uniform(k, (), minval=1 - s, maxval=1 + s))

  luma = np.array([0.299, 0.587, 0.114])
  x = np.clip(img.astype(np.float64) * f(kb, 0.4), 0, 1)
  m = (x @ luma).mean()
  x = np.clip((x - m) * f(kc, 0.4) + m, 0, 1)
  g = (x @ luma)[..., None]
  x = np.clip((x - g) * f(ks, 0.4) + g, 0, 1)
  shift = float(jax.random.uniform(kh, (), minval=-0.1, maxval=0.1))
  hsv = np.array([colorsys.rgb_to_hsv(*p) for p in x.reshape(-1, 3)])
  hsv[:, 0] = (hsv[:, 0] + shift) % 1.0
  want = np.array([colorsys.hsv_to_rgb(*p) for p in hsv]).reshape(x.shape)
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_color_jitter_zero_strength_is_identity():
  img = _img()
  got = ops.color_jitter(jax.random.key(0), _planar(img), (0.0,) * 4)
  np.testing.assert_allclose(_hwc(got), img, atol=1e-6)


def test_grayscale_is_luma():
  img = _img()
  want = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  got = _hwc(ops.grayscale(_planar(img)))
  for c in range(3):
    np.testing.assert_allclose(got[..., c], want, rtol=1e-6)


def test_gaussian_blur_matches_scipy():
  img = _img(40, 30)
  key = jax.random.key(5)
  blur = jax.jit(ops.gaussian_blur, static_argnums=2)
  got = _hwc(blur(key, _planar(img), (0.5, 2.0)))
  sigma = float(jax.random.uniform(key, (), minval=0.5, maxval=2.0))
  radius = int(0.1 * 30) // 2
  want = ndimage.gaussian_filter(
    img.astype(np.float64),
    sigma=(sigma, sigma, 0),
    mode="mirror",
    truncate=radius / sigma,
  )
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_crop_box_ranges():
  keys = jax.random.split(jax.random.key(0), 2000)
  boxes = np.asarray(
    jax.vmap(lambda k: ops.crop_box(k, (128, 64), (0.2, 1.0), (0.5, 2.0)))(keys)
  )
  y0, x0, h, w = boxes.T
  assert (y0 >= 0).all() and (x0 >= 0).all()
  assert (y0 + h <= 128 + 1e-3).all() and (x0 + w <= 64 + 1e-3).all()
  area = h * w / (128 * 64)
  assert area.max() <= 1.0 + 1e-5 and area.min() >= 0.2 * 0.25
  fits = (h < 128) & (w < 64)  # boxes not shrunk to fit
  assert (np.abs(area[fits] - 0.6) < 0.41).all()
  ratio = w[fits] / h[fits]
  assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 2.0 + 1e-4


def test_downscaling_crop_is_antialiased():
  img = _img(16, 8)
  box = jnp.array([0.0, 0.0, 16.0, 8.0])
  got = _hwc(ops.resized_crop(_planar(img), box, (8, 4)))
  # Factor-2 antialiased bilinear = triangle filter of width 4 on the input:
  # weights 1/8, 3/8, 3/8, 1/8 around each output pixel (interior rows).
  k = np.array([1, 3, 3, 1]) / 8.0
  x = img.astype(np.float64)
  rows = np.stack(
    [np.tensordot(k, x[2 * i - 1 : 2 * i + 3], 1) for i in range(1, 7)]
  )
  want = np.stack(
    [
      np.tensordot(k, rows[:, 2 * j - 1 : 2 * j + 3], ([0], [1]))
      for j in range(1, 3)
    ],
    1,
  )
  np.testing.assert_allclose(got[1:7, 1:3], want, atol=1e-5)


@pytest.mark.parametrize("box", [(3.0, 2.0, 6.0, 4.0), (2.3, 1.7, 5.1, 3.3)])
def test_upsampling_crop_matches_scale_and_translate(box):
  img = _img(16, 8)
  got = _hwc(ops.resized_crop(_planar(img), jnp.array(box), (12, 8)))
  # Peer implementation: jax.image's separable triangle filter.
  scale = jnp.array([12 / box[2], 8 / box[3]])
  want = jax.image.scale_and_translate(
    img, (12, 8, 3), (0, 1), scale, -jnp.array(box[:2]) * scale, "linear"
  )
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_crop_of_output_size_is_a_plain_crop():
  img = _img(16, 8)
  box = jnp.array([3.0, 2.0, 6.0, 4.0])
  got = _hwc(ops.resized_crop(_planar(img), box, (6, 4)))
  np.testing.assert_allclose(got, img[3:9, 2:6], atol=1e-6)


def test_pad_crop_is_a_zero_filled_shift():
  img = _img(10, 6) + 0.1
  for seed in range(5):
    got = _hwc(ops.pad_crop(jax.random.key(seed), _planar(img), 2))
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
    hits = [
      (oy, ox)
      for oy in range(5)
      for ox in range(5)
      if np.array_equal(padded[oy : oy + 10, ox : ox + 6], got)
    ]
    assert len(hits) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_erasing_one_rectangle(seed):
  img = np.ones((40, 20, 3), np.float32)
  got = _hwc(ops.random_erasing(jax.random.key(seed), _planar(img)))
  zero = (got == 0).all(-1)
  ys, xs = np.nonzero(zero)
  assert zero.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # a rectangle
  assert 0.02 * 800 * 0.5 <= zero.sum() <= 0.4 * 800 * 1.5
  np.testing.assert_array_equal(got[~zero], 1.0)

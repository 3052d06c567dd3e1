"""make_views / preprocess / batch style standardization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from idlearn import augment
from idlearn.augment import style

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _batch(b=4, h=16, w=8, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)


def _ref_normalize(images):
  return (images.astype(np.float64) / 255.0 - MEAN) / STD


def test_preprocess_same_size_is_normalisation():
  images = _batch()
  got = jax.jit(augment.preprocess, static_argnums=1)(images, (16, 8))
  assert got.dtype == jnp.float32 and got.shape == (4, 16, 8, 3)
  np.testing.assert_allclose(got, _ref_normalize(images), atol=1e-5)


def test_preprocess_resizes_constant_image_to_constant():
  images = np.full((2, 16, 8, 3), 200, np.uint8)
  got = augment.preprocess(images, (32, 12))
  np.testing.assert_allclose(
    got, _ref_normalize(images[:, :1, :1]) + np.zeros((2, 32, 12, 3)), atol=1e-5
  )


def test_empty_spec_is_preprocess_and_flip_one_flips():
  images = _batch()
  plain, flipped = jax.jit(
    lambda k, x: augment.make_views(k, x, [{}, {"flip": 1.0}])
  )(jax.random.key(0), images)
  np.testing.assert_allclose(plain, _ref_normalize(images), atol=1e-5)
  np.testing.assert_allclose(
    flipped, _ref_normalize(images[:, :, ::-1]), atol=1e-5
  )


def test_grayscale_one_gives_luma_in_every_channel():
  images = _batch()
  (v,) = augment.make_views(jax.random.key(0), images, [{"grayscale": 1.0}])
  x = np.asarray(v) * STD + MEAN
  luma = images.astype(np.float64) / 255 @ np.array([0.299, 0.587, 0.114])
  for c in range(3):
    np.testing.assert_allclose(x[..., c], luma, atol=1e-5)


SSL = dict(
  size=(12, 6),
  crop_scale=(0.2, 1.0),
  flip=0.5,
  color_jitter=0.4,
  grayscale=0.2,
  blur=0.5,
  erasing=0.5,
  style_standardization=0.5,
)
REID = dict(size=(16, 8), flip=0.5, pad=2, erasing=0.5)


def _views(key, images):
  return augment.make_views(key, images, [SSL, SSL, REID])


def test_shapes_determinism_and_per_sample_randomness():
  images = np.repeat(_batch(1), 8, axis=0)  # 8 copies of one image
  f = jax.jit(_views)
  a = f(jax.random.key(1), images)
  assert [v.shape for v in a] == [(8, 12, 6, 3)] * 2 + [(8, 16, 8, 3)]
  assert all(v.dtype == jnp.float32 and jnp.isfinite(v).all() for v in a)
  b = f(jax.random.key(1), images)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)
  c = f(jax.random.key(2), images)
  assert not np.allclose(a[0], c[0])
  # Same image, same call: samples and the two SSL views differ.
  assert not np.allclose(a[0][0], a[0][1])
  assert not np.allclose(a[0], a[1])


def test_sharded_batch_gives_the_same_views():
  images = _batch(8)
  want = jax.jit(_views)(jax.random.key(4), images)
  mesh = jax.make_mesh(
    (8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
  )
  sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
  got = jax.jit(_views)(jax.random.key(4), sharded)
  for x, y in zip(got, want, strict=True):
    np.testing.assert_allclose(x, y, atol=1e-5)


def test_bad_spec_and_images():
  with pytest.raises(ValueError, match=r"\['colour_jitter'\] unknown"):
    augment.make_views(jax.random.key(0), _batch(), [{"colour_jitter": 0.4}])
  with pytest.raises(ValueError, match="expected a float or 4 floats"):
    augment.make_views(jax.random.key(0), _batch(), [{"color_jitter": (1, 2)}])
  with pytest.raises(ValueError, match=r"images: expected \[b, H, W, 3\]"):
    augment.make_views(jax.random.key(0), _batch()[..., :1], [{}])


def _smooth(b=4, h=16, w=12, seed=0):
  # Mid-grey smooth images: the swap never pushes pixels out of [0, 1].
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  out = []
  for _ in range(b):
    a, fy, fx = rng.uniform(0.05, 0.15, 3), *rng.uniform(0.2, 0.6, 2)
    base = np.sin(fy * yy + fx * xx)[..., None]
    out.append(0.5 + a * base)
  return np.stack(out).astype(np.float32)


def test_style_standardization_swaps_low_frequency_amplitude():
  x = _smooth()
  key = jax.random.key(7)
  got = np.asarray(
    jax.jit(style.standardize_styles, static_argnums=2)(key, x, (0.3, 0.3))
  )
  k_ref, _ = jax.random.split(key)
  ref = int(jax.random.randint(k_ref, (), 0, 4))
  fy = np.abs(np.fft.fftfreq(16) * 16)[:, None]
  fx = np.abs(np.fft.fftfreq(12) * 12)[None, :]
  mask = (fy <= 0.3 * 8) & (fx <= 0.3 * 6)
  # NumPy float64 reference of the swap.
  spec = np.fft.fft2(x.astype(np.float64), axes=(1, 2))
  amp = np.where(mask[None, :, :, None], np.abs(spec[ref])[None], np.abs(spec))
  want = np.fft.ifft2(amp * np.exp(1j * np.angle(spec)), axes=(1, 2)).real
  assert want.min() > 0 and want.max() < 1  # no clipping in this case
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_allclose(got[ref], x[ref], atol=1e-4)
  # All images now share the reference's low-frequency amplitude.
  out_amp = np.abs(np.fft.fft2(got, axes=(1, 2)))
  for i in range(4):
    np.testing.assert_allclose(
      out_amp[i][mask], out_amp[ref][mask], rtol=1e-3, atol=1e-3
    )

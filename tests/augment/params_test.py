"""The augmentation parameters views hand over (`make_views(...,
with_params=True)`, config.views.<role>.params): the views do not change,
each parameter describes what its op did, and `relative_params`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import augment
from idlearn.augment import ops
from idlearn.training import inputs

MEAN = np.array(augment.IMAGENET_MEAN)
STD = np.array(augment.IMAGENET_STD)
EVERY = dict(
  crop_scale=(0.3, 1.0), pad=2, flip=0.5, color_jitter=0.4, grayscale=0.3,
  blur=0.5, style_standardization=0.5, erasing=0.5,
)  # fmt: skip


def _images(b=8, h=16, w=8, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)


def _col(p, name):
  return np.asarray(p)[:, augment.PARAM_NAMES.index(name)]


def _make(key, x, specs):
  """make_views with parameters, compiled (one program, not one per op)."""
  fn = lambda k, x: augment.make_views(k, x, specs, with_params=True)
  return jax.jit(fn)(key, x)


def test_views_are_the_same_with_parameters_and_off_ops_give_zeros():
  x = _images()
  specs = [dict(EVERY, size=(8, 4)), {}]
  # One program (compiled once): were the views to draw differently with
  # parameters, the two would not be merged and would differ.
  plain, (views, params) = jax.jit(
    lambda k, x: (
      augment.make_views(k, x, specs),
      augment.make_views(k, x, specs, with_params=True),
    )
  )(jax.random.key(0), x)
  for a, b in zip(plain, views, strict=True):
    np.testing.assert_array_equal(a, b)
  for p in params:
    assert p.shape == (8, len(augment.PARAM_NAMES)) and p.dtype == jnp.float32
  np.testing.assert_array_equal(params[1], 0)  # no op, no parameter
  assert np.all(np.asarray(params[0]).std(0)[[0, 1, 2, 3, 12, 14]] > 0)


def test_crop_parameters_rebuild_the_crop():
  x = _images()
  spec = dict(crop_scale=(0.2, 1.0), crop_ratio=(0.3, 0.8), size=(12, 6))
  (view,), (p,) = _make(jax.random.key(3), x, [spec])
  fy = np.sqrt(np.exp(_col(p, "crop_scale") - _col(p, "crop_aspect")))
  fx = np.sqrt(np.exp(_col(p, "crop_scale") + _col(p, "crop_aspect")))
  y0 = (_col(p, "crop_y") + 0.5 - fy / 2) * 16
  x0 = (_col(p, "crop_x") + 0.5 - fx / 2) * 8
  boxes = np.stack([y0, x0, fy * 16, fx * 8], axis=1).astype(np.float32)
  planar = x.astype(np.float32).transpose(0, 3, 1, 2) / 255
  crop = jax.jit(jax.vmap(lambda t, b: ops.resized_crop(t, b, (12, 6))))
  want = np.asarray(crop(planar, boxes)).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(view) * STD + MEAN, want, atol=1e-4)


def test_flip_pad_colour_blur_erasing_and_style_parameters():
  x = _images()
  n = jnp.asarray((x / 255 - MEAN) / STD, jnp.float32)
  specs = [
    dict(flip=0.5),
    dict(pad=2),
    dict(color_jitter=(0.4, 0, 0, 0), color_p=1.0),  # brightness only
    dict(blur=0.5, blur_sigma=(0.5, 1.5)),
    dict(erasing=1.0),
    dict(style_standardization=0.5),
  ]
  views, params = _make(jax.random.key(5), x, specs)
  flip = _col(params[0], "flip")
  assert set(flip) == {0.0, 1.0}
  for i, f in enumerate(flip):
    want = n[i, :, ::-1] if f else n[i]
    np.testing.assert_allclose(views[0][i], want, atol=1e-5)
  # pad: the crop window's offset in output fractions, a zero-filled shift
  dy = np.round(_col(params[1], "pad_y") * 16)
  dx = np.round(_col(params[1], "pad_x") * 8)
  assert set(dy) <= {-2, -1, 0, 1, 2} and len(set(dy) | set(dx)) > 1
  for i in range(8):
    oy, ox = int(dy[i]) + 2, int(dx[i]) + 2
    padded = np.pad(n[i], ((2, 2), (2, 2), (0, 0)), constant_values=np.nan)
    want = padded[oy : oy + 16, ox : ox + 8]
    got = np.asarray(views[1][i])
    inside = ~np.isnan(want)
    np.testing.assert_allclose(got[inside], want[inside], atol=1e-5)
  # brightness: log of the factor
  factor = np.exp(_col(params[2], "brightness"))
  assert np.all((factor >= 0.6 - 1e-6) & (factor <= 1.4 + 1e-6))
  want = np.clip(x / 255 * factor[:, None, None, None], 0, 1)
  np.testing.assert_allclose(views[2] * STD + MEAN, want, atol=1e-5)
  assert np.all(_col(params[2], "contrast") == 0)
  # blur: sigma where blurred, 0 (and the image unchanged) elsewhere
  sigma = _col(params[3], "blur")
  assert np.all((sigma == 0) | ((sigma >= 0.5) & (sigma <= 1.5)))
  for i in np.flatnonzero(sigma == 0):
    np.testing.assert_allclose(views[3][i], n[i], atol=1e-5)
  # erasing: the fraction of pixels set to the mean colour
  erased = np.all(np.asarray(views[4]) == 0, axis=-1).mean((1, 2))
  np.testing.assert_allclose(_col(params[4], "erasing"), erased, atol=1e-6)
  assert erased.min() > 0
  # style: one draw per batch
  assert len(set(_col(params[5], "style"))) == 1


def test_relative_params():
  rng = np.random.default_rng(0)
  p1, p2 = rng.normal(size=(2, 4, len(augment.PARAM_NAMES)))
  p1[:, 6], p2[:, 6] = [0, 1, 1, 0], [0, 0, 1, 1]  # flip
  got = augment.relative_params(p1, p2, ("crop_scale", "flip", "hue"))
  np.testing.assert_allclose(got[:, 0], p2[:, 2] - p1[:, 2], rtol=1e-6)
  np.testing.assert_array_equal(got[:, 1], [0, 1, 0, 1])  # mirrored or not
  np.testing.assert_allclose(got[:, 2], p2[:, 10] - p1[:, 10], rtol=1e-6)
  assert augment.relative_params(p1, p2).shape == (4, 15)
  with pytest.raises(ValueError, match=r"\['zoom'\] unknown"):
    augment.relative_params(p1, p2, ("zoom",))


def test_views_fn_gives_parameters_only_where_asked():
  x = _images()
  spec = dict(count=2, crop_scale=(0.5, 1.0), flip=0.5)
  asked = {"global": dict(spec, params=True), "local": dict(size=(8, 4))}
  views = jax.jit(inputs.make_views_fn(asked))(jax.random.key(2), x)
  plain = inputs.make_views_fn({"global": spec, "local": dict(size=(8, 4))})
  want = jax.jit(plain)(jax.random.key(2), x)
  assert sorted(views) == ["global", "global.params", "local"]
  assert sorted(want) == ["global", "local"]
  for a, b in zip(views["global"], want["global"], strict=True):
    np.testing.assert_array_equal(a, b)
  p1, p2 = views["global.params"]
  assert p1.shape == (8, len(augment.PARAM_NAMES)) and not np.allclose(p1, p2)
  counts = inputs.view_counts(asked)
  assert counts == {"global": 2, "global.params": 2, "local": 1}
  # pair batches: each role from its frame, parameters alike
  pairs = np.stack([x, x[::-1]], axis=1)
  pair_fn = inputs.make_views_fn({"global": dict(spec, frame=1, params=True)})
  got = jax.eval_shape(pair_fn, jax.random.key(2), pairs)
  assert len(got["global.params"]) == 2
  with pytest.raises(ValueError, match="config.views.global.params = 'yes'"):
    inputs.view_counts({"global": dict(params="yes")})

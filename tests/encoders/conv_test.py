"""conv2d: values against a float64 NumPy convolution, gradients against
XLA's own convolution, and the guard that keeps encoders off XLA's slow
small-map convolution path."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import encoders
from idlearn.encoders import conv


def _np_conv(x, w, stride, pad, groups):
  """Direct sum over kernel taps, float64; x NHWC, w HWIO (grouped)."""
  x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, h, wd, c = x.shape
  k, cout = w.shape[0], w.shape[3]
  ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
  cg, og = c // groups, cout // groups
  out = np.zeros((n, ho, wo, cout))
  for i in range(k):
    for j in range(k):
      patch = x[:, i : i + stride * ho : stride, j : j + stride * wo : stride]
      for g in range(groups):
        out[..., g * og : (g + 1) * og] += (
          patch[..., g * cg : (g + 1) * cg] @ w[i, j, :, g * og : (g + 1) * og]
        )
  return out


CASES = [  # (h, w, cin, cout, k, stride, pad, groups)
  (9, 7, 3, 5, 7, 2, 3, 1),  # stem-like, odd sizes
  (4, 2, 6, 4, 3, 1, 1, 1),  # map smaller than the kernel
  (8, 4, 6, 4, 3, 2, 1, 1),  # strided, tiny output
  (12, 10, 5, 7, 3, 1, 1, 1),  # large enough for the native path
  (6, 5, 4, 3, 1, 2, 0, 1),  # strided 1x1 (downsample)
  (6, 4, 5, 5, 3, 1, 1, 5),  # depthwise
  (10, 9, 4, 4, 3, 2, 1, 4),  # strided depthwise
]


@pytest.mark.parametrize("impl", conv.IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_numpy(case, impl):
  h, w, cin, cout, k, stride, pad, groups = case
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, h, w, cin)).astype(np.float32)
  kern = rng.normal(size=(k, k, cin // groups, cout)).astype(np.float32)
  got = jax.jit(
    lambda x, w: conv.conv2d(
      x, w, stride=stride, padding=pad, groups=groups, impl=impl
    )
  )(x, kern)
  np.testing.assert_allclose(
    got, _np_conv(x, kern, stride, pad, groups), rtol=1e-5, atol=1e-4
  )


def _xla_autodiff_grads(x, kern, stride, pad, groups):
  """Gradients of sum(sin(conv)) by autodiff of XLA's own convolution."""

  def loss(x, w):
    y = jax.lax.conv_general_dilated(
      x,
      w,
      (stride, stride),
      [(pad, pad), (pad, pad)],
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups,
    )
    return jnp.sum(jnp.sin(y))

  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kern)


@pytest.mark.parametrize("impl", conv.IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_xla_autodiff(case, impl, monkeypatch):
  """Every path's input and weight gradients (hand-written VJPs included)
  equal autodiff of XLA's convolution. Batch 5 with the CPU weight
  gradient's chunk shrunk to ~2 images: uneven chunks are summed."""
  h, w, cin, cout, k, stride, pad, groups = case
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5, h, w, cin)).astype(np.float32)
  kern = rng.normal(size=(k, k, cin // groups, cout)).astype(np.float32)
  monkeypatch.setattr(
    conv, "DW_CHUNK_BYTES", 2 * h * w * cin * 4, raising=False
  )

  def loss(x, w):
    y = conv.conv2d(x, w, stride=stride, padding=pad, groups=groups, impl=impl)
    return jnp.sum(jnp.sin(y))  # a non-trivial cotangent

  got = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kern)
  want = _xla_autodiff_grads(x, kern, stride, pad, groups)
  for g, r, name in zip(got, want, ("dx", "dw"), strict=True):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4, err_msg=name)


def test_conv2d_rejects_bad_shapes():
  x = jnp.zeros((1, 8, 8, 4))
  with pytest.raises(ValueError, match="impl"):
    conv.conv2d(x, jnp.zeros((3, 3, 4, 4)), impl="fast")
  with pytest.raises(ValueError, match="does not fit input channels 4"):
    conv.conv2d(x, jnp.zeros((3, 3, 3, 4)))


_CONV = re.compile(
  r"stablehlo\.convolution.*?dim_numbers = \[([^\]]*)\]x\[([^\]]*)\]"
  r".*?: \(tensor<([0-9x]+)x\w+>, tensor<([0-9x]+)x\w+>\)"
)


def small_map_convolutions(model, hw, *, train=True):
  """Convolutions in the fwd+bwd HLO whose input map has a side < 8.

  Returns: list of (input shape, kernel-operand shape) of offenders.
  """
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  v = jax.eval_shape(model.init, jax.random.key(0, impl="rbg"), x)

  def loss(params, stats, images):
    (emb, _), _ = model.apply(
      {"params": params, "batch_stats": stats},
      images,
      train=train,
      mutable=["batch_stats"],
    )
    return emb.sum()

  grad = jax.grad(loss, argnums=(0, 2))
  text = jax.jit(grad).lower(v["params"], v["batch_stats"], x).as_text()
  bad = []
  for lhs_dims, _, lhs, rhs in _CONV.findall(text):
    spatial = [i for i, d in enumerate(lhs_dims.split(", ")) if d.isdigit()]
    shape = [int(s) for s in lhs.split("x")]
    if min(shape[i] for i in spatial) < conv.MIN_NATIVE_SIDE:
      bad.append((lhs, rhs))
  return bad


@pytest.mark.parametrize(
  "name,hw",
  [("resnet18", (128, 64)), ("resnet50", (128, 64)), ("osnet_x1_0", (128, 64))],
)
def test_encoders_never_hit_small_map_convolution(name, hw):
  # resnet18 at 128x64 has 4x2 last-stage maps: XLA's CPU convolution runs
  # those (and the input gradient of the stride-2 conv into them) ~100x
  # slower than a matmul. The default impl must route them to matmuls.
  # (OSNet's only XLA convolution is its stem: 1x1 and depthwise convs
  # never take that path.)
  assert small_map_convolutions(encoders.get_encoder(name), hw) == []


def test_small_map_guard_catches_native_convs():
  bad = small_map_convolutions(
    encoders.get_encoder("resnet18", impl="native"), (128, 64)
  )
  assert ("2x4x2x512", "3x3x512x512") in bad
